# tagprofile images. Two targets:
#
#   serve (the default): the API and the A/B simulator. onnxruntime + faiss, no torch:
#         serving never trains, and torch (with its own CUDA libraries) would double the
#         image. VARIANT=cpu (python slim) or gpu (onnxruntime-gpu, faiss-gpu on a CUDA +
#         cuDNN base).
#   train: training, export and the A/B bootstrap (deploy/bootstrap.sh): CPU-only torch.
#
# CPU, after `make demo` wrote artifacts/bundles/synthetic-ctmvm:
#   docker build -t tagprofile:cpu .
#   docker run --rm -p 127.0.0.1:8000:8000 \
#     -v "$PWD/artifacts/bundles/synthetic-ctmvm:/bundle:ro" -e TAGPROFILE_BUNDLE=/bundle \
#     tagprofile:cpu sh -c 'python -m service load && exec python -m service serve --host 0.0.0.0 --port 8000'
# GPU (NVIDIA driver >= 580 for CUDA 13, and the NVIDIA container toolkit on the host):
#   docker build -t tagprofile:gpu --build-arg VARIANT=gpu \
#     --build-arg BASE_IMAGE=nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04 .
#   docker run --rm --gpus all -p 127.0.0.1:8000:8000 \
#     -v "$PWD/artifacts/bundles/synthetic-ctmvm:/bundle:ro" -e TAGPROFILE_BUNDLE=/bundle \
#     -e TAGPROFILE_DEVICE=cuda \
#     tagprofile:gpu sh -c 'python -m service load && exec python -m service serve --host 0.0.0.0 --port 8000'
# `load` puts the bundle's users into the embedded Redis (its data in /app/artifacts/redis),
# `serve` then answers with their profiles; TAGPROFILE_DEVICE=cuda fails loudly instead of
# falling back to the CPU. /readyz names the execution provider in use.
# Training image (what the compose stack's bootstrap runs):
#   docker build -t tagprofile-train:cpu --target train .
#
# onnxruntime-gpu 1.31 (PyPI) is built for CUDA 13 and cuDNN 9, hence the CUDA 13 base;
# faiss-gpu brings its own CUDA 12 runtime as pip wheels. CUDA bases ship no Python 3.11,
# so the GPU runtime copies the builder's CPython (/usr/local) and the few shared libraries
# it links against. Each serving image checks at build time that onnxruntime and faiss
# import and link inside it (deploy/check_image.py), so a broken one fails the build.
#
# The venvs are built in builder stages and copied into the runtime stages, which have no
# compiler, no pip cache and run as an unprivileged user (uid 10001).

# PYTHON_IMAGE builds the venvs, BASE_IMAGE runs the serving one. A venv points at the
# builder's interpreter (/usr/local/bin/python): a CPU BASE_IMAGE must be the same image.
ARG PYTHON_IMAGE=python:3.11.15-slim-bookworm
ARG BASE_IMAGE=python:3.11.15-slim-bookworm
ARG VARIANT=cpu

# --------------------------------------------------------------------------- builders
# The serving venv: the project's dependencies and its `cpu` or `gpu` extra, no `train`.
FROM ${PYTHON_IMAGE} AS serve-builder
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
# reinstall them.
COPY pyproject.toml ./
RUN python -c "import sys, tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + p['optional-dependencies'][sys.argv[1]]))" "${VARIANT}" > requirements.txt; \
    pip install -r requirements.txt

COPY README.md ./
COPY service ./service
RUN pip install --no-deps . && pip check

# The training venv: dependencies, `cpu` and `train`; torch from the PyTorch CPU index
# (the PyPI wheel pulls several GB of CUDA libraries).
FROM ${PYTHON_IMAGE} AS train-builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
SHELL ["/bin/sh", "-eu", "-c"]
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; x = p['optional-dependencies']; print('\n'.join(p['dependencies'] + x['cpu'] + x['train']))" > requirements.txt; \
    pip install --index-url https://download.pytorch.org/whl/cpu "$(grep '^torch==' requirements.txt)"; \
    pip install -r requirements.txt
COPY README.md ./
COPY training ./training
COPY service ./service
RUN pip install --no-deps . && pip check

# --------------------------------------------------------------------------- train
FROM ${PYTHON_IMAGE} AS train
LABEL org.opencontainers.image.title="tagprofile-train" \
      org.opencontainers.image.description="tagprofile training, export and A/B bootstrap (CPU torch)" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 tagprofile \
    && useradd --system --uid 10001 --gid tagprofile --create-home --home-dir /home/tagprofile \
       --shell /usr/sbin/nologin tagprofile
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH \
    MPLCONFIGDIR=/tmp/matplotlib
WORKDIR /app
COPY --from=train-builder /opt/venv /opt/venv
COPY training ./training
COPY service ./service
COPY deploy ./deploy
RUN mkdir -p /app/artifacts && chown tagprofile:tagprofile /app/artifacts
USER 10001:10001
CMD ["sh", "deploy/bootstrap.sh"]

# --------------------------------------------------------------------------- serving runtime
FROM ${BASE_IMAGE} AS runtime-cpu

FROM ${BASE_IMAGE} AS runtime-gpu
# Runtime libraries of the builder's CPython, plus ldd for the image check; these package
# names exist on Debian bookworm and Ubuntu 22.04/24.04 alike, whose versions differ,
# hence no pins.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libbz2-1.0 libc-bin \
       libexpat1 libffi8 liblzma5 libsqlite3-0 libuuid1 zlib1g \
    && rm -rf /var/lib/apt/lists/*
COPY --from=serve-builder /usr/local/ /usr/local/
RUN ldconfig && python3.11 --version

# runtime-${VARIANT} is one of the two stages above, not a registry image: nothing to tag.
# hadolint ignore=DL3006
FROM runtime-${VARIANT} AS serve
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

COPY --from=serve-builder /opt/venv /opt/venv
# Source stays root-owned (read-only for the service); deploy/ holds the experiments file
# and the image check. artifacts/ is the only writable place: created here, owned by the
# service user, so a named volume mounted on it starts with that owner.
COPY service ./service
COPY deploy ./deploy
RUN python deploy/check_image.py --variant "${VARIANT}" --no-torch \
    && mkdir -p /app/artifacts && chown tagprofile:tagprofile /app/artifacts

USER 10001:10001
EXPOSE 8000

# Liveness only (/healthz); compose waits on /readyz. No curl in slim images: urllib.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

CMD ["python", "-m", "service", "serve", "--host", "0.0.0.0", "--port", "8000"]
