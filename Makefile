# tagprofile: one place for the commands people and CI run.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= cpu,train,dev,scale
SHARED ?= ../shared/datasets
ARTIFACTS ?= artifacts
# pytest-xdist workers of `make test` (auto: one per core; 0: serial, e.g. for pdb)
TEST_WORKERS ?= auto

.PHONY: install test lint format demo serve abtest abtest-real prepare-real bench bench-models clean

install: $(VENV)/.installed ## create .venv and install .[cpu,train,dev,scale]

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --editable '.[$(EXTRAS)]'
	touch $@

test: install ## lint, then the whole test suite in parallel; lists the slowest tests
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -n $(TEST_WORKERS) --durations=15

lint: install
	$(BIN)/ruff check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

DEMO_BUNDLE := $(ARTIFACTS)/bundles/synthetic-ctmvm
DEMO_ENV := TAGPROFILE_BUNDLE=$(DEMO_BUNDLE) TAGPROFILE_REDIS_DATA_DIR=$(ARTIFACTS)/redis \
	TAGPROFILE_ADMIN_TOKEN=$${TAGPROFILE_ADMIN_TOKEN:-demo-admin-token}

DEMO_DATA := $(ARTIFACTS)/data/synthetic
DEMO_RUN := $(ARTIFACTS)/runs/synthetic-ctmvm

demo: install $(DEMO_BUNDLE)/manifest.json ## the main job: synthetic world -> CTMVM -> bundle -> Redis -> API on :8000
	$(DEMO_ENV) $(BIN)/python -m service load
	$(DEMO_ENV) $(BIN)/python -m service precompute
	$(DEMO_ENV) $(BIN)/python -m service serve --host 127.0.0.1 --port 8000

# the demo's stages are files: a second `make demo` reuses them (`make clean` starts over)
$(DEMO_DATA)/meta.json: | $(VENV)/.installed
	$(BIN)/python -m training prepare --dataset synthetic --out $(DEMO_DATA)

$(DEMO_RUN)/checkpoint.pt: $(DEMO_DATA)/meta.json training/configs/synthetic.json
	$(BIN)/python -m training train --data $(DEMO_DATA) --model ctmvm --out $(DEMO_RUN) --epochs 1

$(DEMO_BUNDLE)/manifest.json: $(DEMO_RUN)/checkpoint.pt
	$(BIN)/python -m training export --run $(DEMO_RUN) --out $(DEMO_BUNDLE)

serve: install ## serve an existing bundle (BUNDLE=dir) with the embedded Redis
	$(DEMO_ENV) $(BIN)/python -m service serve --bundle $${BUNDLE:-$(DEMO_BUNDLE)}

abtest: install ## local A/B test (no Docker): bootstrap, API, simulator; report in artifacts/abtest
	$(BIN)/python deploy/abtest_local.py --artifacts $(ARTIFACTS)

abtest-real: install prepare-real ## the same A/B test on hetrec-movielens-2k test users
	$(BIN)/python deploy/abtest_local.py --artifacts $(ARTIFACTS)/real \
		--data $(ARTIFACTS)/data/hetrec-movielens-2k --sessions 20

prepare-real: install ## prepare the three shared real data sets (where ../shared/datasets exists)
	$(BIN)/python -m training prepare --dataset movielens \
		--path $(SHARED)/ml-latest-small --out $(ARTIFACTS)/data/ml-latest-small
	$(BIN)/python -m training prepare --dataset hetrec-movielens \
		--path $(SHARED)/hetrec2011-movielens-2k --out $(ARTIFACTS)/data/hetrec-movielens-2k
	$(BIN)/python -m training prepare --dataset movielens-tags \
		--path $(SHARED)/ml-10m-tags --out $(ARTIFACTS)/data/ml-10m-tags

bench: install ## the benchmarks recorded in benchmarks/RESULTS.md
	$(BIN)/python benchmarks/bench_shapley.py --data $(SHARED)/hetrec2011-movielens-2k
	$(BIN)/python benchmarks/bench_prepare.py --shared $(SHARED)
	$(BIN)/python benchmarks/bench_service.py --bundle $(DEMO_BUNDLE) --seconds 10 \
		--out $(ARTIFACTS)/bench/service.json
	$(BIN)/python benchmarks/bench_chaos.py --bundle $(DEMO_BUNDLE) --clients 1000 \
		--redis embedded --out $(ARTIFACTS)/bench/chaos-embedded.json

SPLITS ?= 0 1 2
BENCH_SEEDS ?= 0,1,2
BENCH_MODELS ?= mostpop,userpop,cooccur,youtube_plain,youtube,utpm,sve,sve_pkm,ctmvm
BENCH_MODELS_LARGE ?= mostpop,userpop,cooccur,youtube_plain,ctmvm
BENCH_MODELS_SYNTHETIC ?= mostpop,userpop,cooccur,youtube_plain,youtube,sve,ctmvm

# $(call bench_set,NAME,PREPARE ARGUMENTS,MODELS): prepare the splits not prepared yet, then
# one benchmark over all of them into $(ARTIFACTS)/bench/NAME (--resume: runs that finished
# with the same config are reused, so an interrupted `make bench-models` picks up where it was)
define bench_set
	for s in $(SPLITS); do [ -f $(ARTIFACTS)/data/$(1)-split$$s/meta.json ] || \
		$(BIN)/python -m training prepare $(2) --seed $$s --out $(ARTIFACTS)/data/$(1)-split$$s \
		|| exit 1; done
	$(BIN)/python -m training benchmark --resume --models $(3) --seeds $(BENCH_SEEDS) --device cpu \
		--data $(foreach s,$(SPLITS),$(ARTIFACTS)/data/$(1)-split$(s)) --out $(ARTIFACTS)/bench/$(1)
endef

bench-models: install ## model quality in RESULTS.md: 3 shared sets + synthetic, 3 user splits x 3 seeds
	$(call bench_set,ml-latest-small,--dataset movielens --path $(SHARED)/ml-latest-small,$(BENCH_MODELS))
	$(call bench_set,hetrec-movielens-2k,--dataset hetrec-movielens \
		--path $(SHARED)/hetrec2011-movielens-2k,$(BENCH_MODELS))
	$(call bench_set,ml-10m-tags,--dataset movielens-tags --path $(SHARED)/ml-10m-tags,$(BENCH_MODELS_LARGE))
	$(call bench_set,synthetic,--dataset synthetic,$(BENCH_MODELS_SYNTHETIC))

clean:
	rm -rf $(ARTIFACTS) .pytest_cache .ruff_cache
