# One entry point per user action. Everything runs from the project's own .venv.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
export NO_ALBUMENTATIONS_UPDATE := 1
export WANDB_MODE := disabled
export RAY_USAGE_STATS_ENABLED := 0

comma := ,
empty :=
space := $(empty) $(empty)
DEMO_DIR ?= demo-run
SCALE ?= small

.PHONY: setup test test-all test-fast lint format demo bench clean crawl curate train tokenizer

# Curation commands run on a local Ray instance, or, when RAY_ADDRESS holds a Ray Jobs API address
# (http://HEAD:8265), are submitted to that cluster with this folder as the working dir.
ifneq (,$(filter http://% https://%,$(RAY_ADDRESS)))
CURATION := $(PY) -m curation submit --
else
CURATION := $(PY) -m curation
endif

setup:  ## create .venv and install the project with its test tools
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	$(MAKE) browser

test:  ## the test suite, end-to-end runs included; whole benchmark-script runs are left to test-all
	$(PY) -m pytest -q -m "not bench" --durations=20

test-all:  ## every test, the whole benchmark-script runs too (each runs its script at the smallest size)
	$(PY) -m pytest -q

test-fast:  ## skip the slow end-to-end runs
	$(PY) -m pytest -q -m "not slow and not bench"

lint:  ## ruff's lint rules and formatting check (CI runs this)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format:  ## rewrite the tree in ruff's format and apply its safe fixes
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

demo:  ## the whole chain on the built-in mini Common Crawl; three arms at equal steps, DEMO_DIR/report.json
	$(PY) -m curation demo --out $(DEMO_DIR) --scale $(SCALE)

bench:  ## every benchmark; each prints a ratio against its reference
	@for script in benchmarks/*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

tokenizer:  ## rebuild the tiny preset's BPE (training/tokenizers/minicc_bpe.json) from the mini web's text
	$(PY) -m curation minicc tokenizer --out training/tokenizers/minicc_bpe.json

crawl: OUT ?= runs/crawl
crawl: CC_ROOT ?= s3://commoncrawl/
crawl: FORMAT ?= warc
crawl: IMAGE_SIZE ?= 512
crawl: RESIZE_MODE ?= keep_ratio_largest
crawl:  ## SNAPSHOT=CC-MAIN-2024-10 OUT=DIR|s3://…: extract → dedup → download into OUT/pool
	@test -n "$(SNAPSHOT)" || { echo "usage: make crawl SNAPSHOT=CC-MAIN-YYYY-WW OUT=DIR [CC_ROOT=URL] [MAX_FILES=N]"; exit 2; }
	$(CURATION) extract --snapshot $(SNAPSHOT) --cc-root $(CC_ROOT) --format $(FORMAT) \
	  --out $(OUT)/candidates $(if $(MAX_FILES),--max-files $(MAX_FILES))
	$(CURATION) dedup --input $(OUT)/candidates --out $(OUT)/dedup
	$(CURATION) download --input $(OUT)/dedup --out $(OUT)/pool --image-size $(IMAGE_SIZE) \
	  --resize-mode $(RESIZE_MODE) $(if $(ALLOW_NETWORK),--allow-network $(ALLOW_NETWORK))

curate: METADATA ?= wordfreq:en
curate: T ?= 20000
curate: TOP_FRACTION ?= 0.3
curate: SCORE_MODEL ?= tiny-clip
curate: DEBIAS ?= 1
curate: LANGUAGE_MIX ?= en=0.9,other=0.1
# The stages this run applies, in order; shards --require gets exactly these.
curate: CURATE_STAGES = balance $(if $(SCORER)$(WEIGHTS),score) neardup \
  $(if $(and $(NSFW_WEIGHTS),$(SCORER)$(WEIGHTS)),nsfw) $(if $(filter 1,$(DEBIAS)),debias) \
  $(if $(LANGUAGE_MIX),langmix)
curate:  ## IN=POOL OUT=TRAIN [SCORER=RUN | WEIGHTS=FILE SCORE_MODEL=NAME] [NSFW_WEIGHTS=HEAD] [DEBIAS=0] [LANGUAGE_MIX=…|""] [WORLD=DIR]: balance → score → neardup → nsfw → debias → langmix → shards
	@test -n "$(IN)" -a -n "$(OUT)" || { echo "usage: make curate IN=POOL OUT=TRAIN [SCORER=TRAINING_RUN | WEIGHTS=FILE SCORE_MODEL=NAME] [NSFW_WEIGHTS=HEAD.safetensors] [DEBIAS=0] [LANGUAGE_MIX=en=0.9,other=0.1 | LANGUAGE_MIX=] [METADATA=…] [T=…] [TOP_FRACTION=…] [WORLD=minicc dir]"; exit 2; }
	$(CURATION) balance --input $(IN) --metadata $(METADATA) --t $(T) --texts-column texts
ifneq (,$(SCORER))
	$(PY) -m training export --ckpt $(SCORER) --format open_clip --out $(SCORER)/open_clip
	$(CURATION) score --pool $(IN) --model openvision-siglip2 --weights $(SCORER)/open_clip/open_clip_model.safetensors \
	  --model-config $(SCORER)/open_clip/open_clip_config.json --top-fraction $(TOP_FRACTION)
else ifneq (,$(WEIGHTS))
	$(CURATION) score --pool $(IN) --model $(SCORE_MODEL) --weights $(WEIGHTS) --top-fraction $(TOP_FRACTION)
else
	@echo "no SCORER or WEIGHTS given: scoring with a RANDOMLY INITIALISED $(SCORE_MODEL) (pixel signatures for near-dup only, no CLIP filter)"
	$(CURATION) score --model $(SCORE_MODEL) --init-random-weights $(IN)/curation/random-scorer.safetensors
	$(CURATION) score --pool $(IN) --out $(IN)/curation/score_signatures --model $(SCORE_MODEL) \
	  --weights $(IN)/curation/random-scorer.safetensors
endif
	$(CURATION) neardup --pool $(IN) $(if $(WORLD),--world $(WORLD)) \
	  $(if $(SCORER)$(WEIGHTS),,--scores $(IN)/curation/score_signatures)
	$(if $(filter nsfw,$(CURATE_STAGES)),$(CURATION) nsfw --pool $(IN) --weights $(NSFW_WEIGHTS),@echo "nsfw: not run ($(if $(NSFW_WEIGHTS),the head reads a trained scorer's embeddings: give SCORER or WEIGHTS,no NSFW_WEIGHTS: the project ships no NSFW head; see README))")
	$(if $(filter debias,$(CURATE_STAGES)),$(CURATION) debias --pool $(IN) --metadata $(METADATA),@echo "debias: not run (DEBIAS=$(DEBIAS))")
	$(if $(filter langmix,$(CURATE_STAGES)),$(CURATION) langmix --pool $(IN) --language-mix $(LANGUAGE_MIX),@echo "langmix: not run (LANGUAGE_MIX is empty)")
	$(CURATION) shards --pool $(IN) --out $(OUT) --require $(subst $(space),$(comma),$(strip $(CURATE_STAGES)))

train: PRESET ?= tiny
train: NPROC ?= 1
train:  ## DATA='DIR/*.tar' [GROUNDING='DIR/*.tar'] RUN=DIR [PRESET=b16] [NPROC=8] [STEPS=N]: phases 1 → 2 → 3 as the preset sets
	@test -n "$(DATA)" -a -n "$(RUN)" || { echo "usage: make train DATA='SHARDS' RUN=DIR [GROUNDING='SHARDS'] [PRESET=tiny|b16|so400m] [NPROC=N]"; exit 2; }
	$(if $(filter 1,$(NPROC)),$(PY),$(VENV)/bin/torchrun --nproc_per_node $(NPROC)) -m training train \
	  --preset $(PRESET) --data '$(DATA)' $(if $(GROUNDING),--grounding '$(GROUNDING)') --out $(RUN) \
	  $(if $(STEPS),--steps $(STEPS))

.PHONY: dashboard browser screenshots
dashboard:  ## serve the curation dashboard for RUN (a local folder or s3://) on 127.0.0.1
	$(PY) -m curation dashboard --run $(RUN)

screenshots: RUN ?= $(DEMO_DIR)
screenshots:  ## [RUN=demo-run]: the README's dashboard screenshots (docs/screenshots/) of a run, e.g. after make demo
	@test -d "$(RUN)" || { echo "make screenshots: no run folder $(RUN) (run make demo, or pass RUN=DIR)"; exit 2; }
	DASHBOARD_RUN=$(RUN) DASHBOARD_SCREENSHOTS=docs/screenshots \
	  $(PY) -m pytest -q tests/curation/dashboard/test_browser.py -k test_screenshots_of_a_run -rs

browser:  ## the headless Chromium the dashboard's browser tests drive (Debian package)
	@if [ ! -x /usr/bin/chromium ]; then \
	  (DEBIAN_FRONTEND=noninteractive apt-get update && \
	   DEBIAN_FRONTEND=noninteractive apt-get install -y chromium) || \
	  echo "could not install chromium with apt-get: the dashboard's browser tests will be skipped"; \
	fi

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
