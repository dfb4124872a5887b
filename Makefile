# One entry point per user action. Everything runs from the project's own .venv.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
export NO_ALBUMENTATIONS_UPDATE := 1
export WANDB_MODE := disabled
export RAY_USAGE_STATS_ENABLED := 0

DEMO_DIR ?= demo-run
SCALE ?= small

.PHONY: setup test test-fast demo bench clean

setup:  ## create .venv and install the project with its test tools
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(MAKE) browser

test:  ## the whole test suite, end-to-end runs included
	$(PY) -m pytest -q

test-fast:  ## skip the slow end-to-end runs
	$(PY) -m pytest -q -m "not slow"

demo:  ## the whole chain on the built-in mini Common Crawl
	$(PY) -m curation demo --out $(DEMO_DIR) --scale $(SCALE)

bench:  ## every benchmark; each prints a ratio against its reference
	@for script in benchmarks/*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

.PHONY: dashboard browser
dashboard:  ## serve the curation dashboard for RUN (a local folder or s3://) on 127.0.0.1
	$(PY) -m curation dashboard --run $(RUN)

browser:  ## the headless Chromium the dashboard's browser tests drive (Debian package)
	@if [ ! -x /usr/bin/chromium ]; then \
	  (DEBIAN_FRONTEND=noninteractive apt-get update && \
	   DEBIAN_FRONTEND=noninteractive apt-get install -y chromium) || \
	  echo "could not install chromium with apt-get: the dashboard's browser tests will be skipped"; \
	fi

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
