"""Convert a checkpoint with llama.cpp's own convert_hf_to_gguf.py: the oracle for tests.

Dev tool: convert_hf_to_gguf.py needs torch. It runs from the llama.cpp tree that matches the
installed llama-cpp-python (scripts/llama_cpp_src.py), with that tree's gguf-py first on
PYTHONPATH so it uses the gguf package it was written for, not the installed one.

    python scripts/oracle_convert.py CHECKPOINT_DIR OUT.gguf --outtype q8_0 [--vocab-pre smollm]

convert_hf_to_gguf.py names a BPE tokenizer's pre-tokenizer (tokenizer.ggml.pre) by hashing the
token ids of a fixed text, so it refuses a tokenizer it has no hash for, such as the fixture
tiny-bpe (SmolLM's pre-tokenizer over a 401-token vocab). --vocab-pre NAME replaces that lookup
(TextModel.get_vocab_base_pre) with NAME; everything else is llama.cpp's code unchanged.
--no-mtp passes the converter's own flag: its Qwen3-Next and Qwen3.5 classes assert that a
checkpoint has a multi-token-prediction block unless told to leave it out, and transformers
(hence a tiny fixture) has none.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from llama_cpp_src import llama_cpp_src

OUTTYPES = ("f32", "f16", "bf16", "q8_0")

# Run convert_hf_to_gguf.py as __main__ with get_vocab_base_pre answering argv[1].
_WITH_VOCAB_PRE = """\
import os, runpy, sys
pre, script = sys.argv[1], sys.argv[2]
sys.argv = sys.argv[2:]
sys.path.insert(0, os.path.dirname(script))
from conversion.base import TextModel
TextModel.get_vocab_base_pre = lambda self, tokenizer: pre
runpy.run_path(script, run_name="__main__")
"""


def oracle_convert(checkpoint: Path, out: Path, outtype: str, vocab_pre: str | None = None,
                   vocab_only: bool = False, no_mtp: bool = False) -> None:
    """Write `out` from `checkpoint` with convert_hf_to_gguf.py; raise CalledProcessError on failure."""
    tree = llama_cpp_src()
    env = dict(os.environ)
    env.pop("NO_LOCAL_GGUF", None)  # the script would then skip its own gguf-py
    env["PYTHONPATH"] = os.pathsep.join(
        [str(tree / "gguf-py"), *filter(None, [os.environ.get("PYTHONPATH")])])
    out.parent.mkdir(parents=True, exist_ok=True)
    script = [str(tree / "convert_hf_to_gguf.py"), str(checkpoint),
              "--outfile", str(out), "--outtype", outtype] + (["--vocab-only"] if vocab_only else []) \
        + (["--no-mtp"] if no_mtp else [])
    if vocab_pre is None:
        cmd = [sys.executable, *script]
    else:
        cmd = [sys.executable, "-c", _WITH_VOCAB_PRE, vocab_pre, *script]
    subprocess.run(cmd, check=True, env=env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="Hugging Face checkpoint directory")
    parser.add_argument("out", type=Path, help="GGUF file to write")
    parser.add_argument("--outtype", choices=OUTTYPES, default="f16")
    parser.add_argument("--vocab-pre", metavar="NAME",
                        help="tokenizer.ggml.pre to write for a BPE vocab llama.cpp has no hash for")
    parser.add_argument("--vocab-only", action="store_true", help="write only the tokenizer metadata")
    parser.add_argument("--no-mtp", action="store_true", help="leave out the multi-token-prediction block")
    args = parser.parse_args()
    if not (args.checkpoint / "config.json").is_file():
        parser.error(f"{args.checkpoint} has no config.json; give a Hugging Face checkpoint directory")
    try:
        oracle_convert(args.checkpoint.resolve(), args.out.resolve(), args.outtype, args.vocab_pre,
                       args.vocab_only, args.no_mtp)
    except subprocess.CalledProcessError as err:
        sys.exit(f"convert_hf_to_gguf.py failed with exit code {err.returncode}")


if __name__ == "__main__":
    main()
