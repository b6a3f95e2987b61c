# tagprofile: one image for the whole stack (training, bootstrap, API, A/B simulator).
#
# CPU (default; CPU-only torch, onnxruntime, faiss-cpu) on python:3.11-slim:
#   docker build -t tagprofile:cpu .
# GPU (onnxruntime-gpu, faiss-gpu, CUDA torch) on a CUDA + cuDNN runtime base:
#   docker build -t tagprofile:gpu --build-arg VARIANT=gpu \
#     --build-arg BASE_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04 .
#   docker run --gpus all -p 127.0.0.1:8000:8000 tagprofile:gpu
# CUDA bases ship no Python 3.11, so the GPU runtime stage copies the builder's CPython
# (/usr/local) and installs the few shared libraries it links against.
#
# The venv is built in one stage and copied into the runtime stage, which has no compiler,
# no pip cache and runs as an unprivileged user (uid 10001).

# PYTHON_IMAGE builds the venv, BASE_IMAGE runs it. The venv points at the builder's
# interpreter (/usr/local/bin/python): a CPU BASE_IMAGE must be the same Python image.
ARG PYTHON_IMAGE=python:3.11.15-slim-bookworm
ARG BASE_IMAGE=python:3.11.15-slim-bookworm
ARG VARIANT=cpu

# --------------------------------------------------------------------------- builder
FROM ${PYTHON_IMAGE} AS builder
ARG VARIANT
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
SHELL ["/bin/sh", "-eu", "-c"]
WORKDIR /src

RUN case "${VARIANT}" in cpu|gpu) ;; \
      *) echo "VARIANT must be cpu or gpu, got '${VARIANT}'" >&2; exit 1 ;; esac; \
    python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# Dependencies first, from pyproject.toml alone, so that editing the source does not
# reinstall torch. The CPU image takes torch from the PyTorch CPU index: the PyPI wheel
# pulls several GB of CUDA libraries.
COPY pyproject.toml ./
RUN python -c "import sys, tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; x = p['optional-dependencies']; print('\n'.join(p['dependencies'] + x[sys.argv[1]] + x['train']))" "${VARIANT}" > requirements.txt; \
    if [ "${VARIANT}" = cpu ]; then \
      pip install --index-url https://download.pytorch.org/whl/cpu "$(grep '^torch==' requirements.txt)"; \
    fi; \
    pip install -r requirements.txt

COPY README.md ./
COPY training ./training
COPY service ./service
RUN pip install --no-deps . && pip check

# --------------------------------------------------------------------------- runtime
FROM ${BASE_IMAGE} AS runtime-cpu

FROM ${BASE_IMAGE} AS runtime-gpu
# Runtime libraries of the builder's CPython; these package names exist on Debian
# bookworm and Ubuntu 22.04/24.04 alike, whose versions differ, hence no pins.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libbz2-1.0 libexpat1 \
       libffi8 liblzma5 libsqlite3-0 libuuid1 zlib1g \
    && rm -rf /var/lib/apt/lists/*
COPY --from=builder /usr/local/ /usr/local/
RUN ldconfig && python3.11 --version

# runtime-${VARIANT} is one of the two stages above, not a registry image: nothing to tag.
# hadolint ignore=DL3006
FROM runtime-${VARIANT} AS runtime
ARG VARIANT
LABEL org.opencontainers.image.title="tagprofile" \
      org.opencontainers.image.description="User-tag profiles (CTMVM) served with Redis and A/B tests" \
      org.opencontainers.image.licenses="Apache-2.0" \
      tagprofile.variant="${VARIANT}"

RUN groupadd --system --gid 10001 tagprofile \
    && useradd --system --uid 10001 --gid tagprofile --create-home --home-dir /home/tagprofile \
       --shell /usr/sbin/nologin tagprofile

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH \
    MPLCONFIGDIR=/tmp/matplotlib \
    TAGPROFILE_BUNDLE=artifacts/bundles/abtest
WORKDIR /app

COPY --from=builder /opt/venv /opt/venv
# Source stays root-owned (read-only for the service); deploy/ holds bootstrap.sh and the
# experiments file. artifacts/ is the only writable place: created here, owned by the
# service user, so a named volume mounted on it starts with that owner.
COPY training ./training
COPY service ./service
COPY deploy ./deploy
RUN mkdir -p /app/artifacts && chown tagprofile:tagprofile /app/artifacts

USER 10001:10001
EXPOSE 8000

# Liveness only (/healthz); compose waits on /readyz. No curl in slim images: urllib.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

CMD ["python", "-m", "service", "serve", "--host", "0.0.0.0", "--port", "8000"]
