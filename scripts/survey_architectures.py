"""Survey what llama.cpp's own converter and runtime do with the fixtures of issue 13's architectures.

Dev tool (the converter needs torch). For each fixture under tests/fixtures/pending/
(architectures without an adapter yet) or tests/fixtures/models/ (default: the ones in
NEW_FIXTURES), it runs scripts/oracle_convert.py to F32 and to F16, loads the F32 file in
llama.cpp (llama-cpp-python, F32 KV cache, as tests/conftest.py's llama_logits) and compares its
logits with the fixture's reference.npz (transformers, eager, float32). It prints a markdown
table, the survey in docs/architectures-survey.md, and after it, per fixture, what the converter's
F32 file holds beyond a plain Llama's: its metadata keys outside BASE_KEYS, and its tensors (names
with the block number as N, shapes as GGUF gives them, ne0 first):

    python scripts/survey_architectures.py                 # every new fixture
    python scripts/survey_architectures.py FIXTURE...      # some of them

Each conversion and each llama.cpp load runs in a child process: llama.cpp aborts the process on
some models it cannot run, and the survey records that and goes on.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "tests" / "fixtures" / "models"
PENDING = ROOT / "tests" / "fixtures" / "pending"


def fixture_path(name: str) -> Path:
    """A fixture's folder: pending until its architecture has an adapter, then under models/."""
    return PENDING / name if (PENDING / name).is_dir() else MODELS / name

sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # this tree's qconvert and conftest
from conftest import oracle_vocab_pre  # noqa: E402  (the --vocab-pre the tests give the converter)

# The fixtures of issue 13's architectures (scripts/make_tiny_models.py makes them), in the issue's order.
NEW_FIXTURES = (
    "granite-bpe-bf16", "qwen2moe-bpe-bf16", "ernie45-spm-bf16", "seedoss-bpe-bf16", "exaone4-bpe-bf16",
    "hunyuan-bpe-bf16", "apertus-bpe-bf16", "glm4moe-bpe-bf16", "deepseek3-bpe-bf16", "gptoss-bpe-bf16",
    "llama4-bpe-bf16", "lfm2-bpe-bf16", "granite4-bpe-bf16", "qwen3next-bpe-bf16", "qwen35-bpe-bf16",
    "qwen35moe-bpe-bf16", "minimaxm2-bpe-bf16", "gemma3n-spm-bf16",
)

# Fixtures the converter takes only with --no-mtp: its Qwen3-Next and Qwen3.5 classes assert a
# multi-token-prediction block (mtp.* tensors, or mtp_num_hidden_layers) unless told to leave it
# out, and transformers builds none.
NO_MTP = {"qwen3next-bpe-bf16", "qwen35-bpe-bf16", "qwen35moe-bpe-bf16"}

# The child that loads a GGUF in llama.cpp and saves its logits for the tokens given: as
# tests/conftest.py's llama_logits (F32 KV cache: type_k = type_v = 0), but verbose, so that what
# llama.cpp says when it refuses a model reaches the survey's notes.
_LOGITS_CHILD = """\
import sys, numpy as np
from llama_cpp import Llama
gguf, tokens_npy, out = sys.argv[1:]
tokens = [int(t) for t in np.load(tokens_npy)]
llm = Llama(model_path=gguf, n_ctx=max(64, len(tokens) + 8), n_batch=512, logits_all=True,
            type_k=0, type_v=0, n_threads=2, verbose=True)
llm.eval(tokens)
np.save(out, np.array(llm.scores[:len(tokens)], dtype=np.float32))
"""


# The architecture keys (after "ARCH.") every decoder's file has; the details list the others.
BASE_KEYS = {"context_length", "embedding_length", "block_count", "feed_forward_length", "attention.head_count",
             "attention.head_count_kv", "rope.freq_base", "attention.layer_norm_rms_epsilon",
             "attention.key_length", "attention.value_length", "vocab_size", "rope.dimension_count"}


@dataclass
class Row:
    fixture: str
    hf_class: str
    arch: str = "-"            # general.architecture of the converter's F32 file
    f32: str = "no"            # the converter wrote an F32 file
    f16: str = "no"
    loads: str = "-"           # llama.cpp loaded the F32 file and evaluated the prompt
    max_abs: float | None = None  # max |llama.cpp logits - transformers logits|
    rel: float | None = None      # the same over max |transformers logits|
    notes: str = ""
    keys: list[str] = field(default_factory=list)     # "key = value" beyond BASE_KEYS
    tensors: list[str] = field(default_factory=list)  # "name [shape] type", blocks folded

    def markdown(self) -> str:
        err = "-" if self.max_abs is None else f"{self.max_abs:.2e} ({self.rel:.1e} rel)"
        return (f"| {self.fixture} | {self.hf_class} | {self.arch} | {self.f32} | {self.f16} | {self.loads} "
                f"| {err} | {self.notes.replace('|', '/')} |")


HEADER = ("| fixture | HF class | llama.cpp arch | converter F32 | converter F16 | llama.cpp loads | "
          "max abs logit error (relative) | notes |\n|---|---|---|---|---|---|---|---|")


def last_line(text: str) -> str:
    """What went wrong, from a child's stderr: its last exception line (with the source line of
    a bare AssertionError), else its last line that says error or failed, else its last line."""
    import re

    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for i in range(len(lines) - 1, -1, -1):
        if re.match(r"^[\w.]*(Error|Exception)\b", lines[i]):
            source = [ln for ln in lines[:i] if set(ln) - set("^~ ")]  # without 3.11's carets
            bare = lines[i] == "AssertionError" and source
            return (f"{lines[i]} at {source[-1]}" if bare else lines[i])[:240]
    said = [ln for ln in lines if "error" in ln.lower() or "failed" in ln] or lines or ["(no output)"]
    return said[-1][:240]


def convert(src: Path, out: Path, outtype: str) -> tuple[bool, str]:
    """scripts/oracle_convert.py on `src`: (wrote the file, its failure line)."""
    pre = oracle_vocab_pre(src)
    cmd = [sys.executable, str(ROOT / "scripts" / "oracle_convert.py"), str(src), str(out), "--outtype", outtype,
           *(["--vocab-pre", pre] if pre else []), *(["--no-mtp"] if src.name in NO_MTP else [])]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    ok = proc.returncode == 0 and out.is_file()
    return ok, "" if ok else f"converter {outtype}: {last_line(proc.stderr)}"


def short(value) -> str:
    text = repr(value)
    return text if len(text) <= 100 else text[:97] + "..."


def contents(path: Path) -> tuple[str, list[str], list[str]]:
    """The file's architecture, its keys beyond BASE_KEYS and its tensors, blocks folded: a
    tensor appears once per distinct (name, shape, type) with the blocks that have it."""
    import re

    import gguf

    reader = gguf.GGUFReader(path)
    arch = reader.fields["general.architecture"].contents()
    keys = [f"{k} = {short(f.contents())}" for k, f in reader.fields.items()
            if k.startswith(arch + ".") and k[len(arch) + 1:] not in BASE_KEYS]
    blocks: dict[tuple[str, tuple[int, ...], str], list[str]] = {}
    for t in reader.tensors:
        m = re.match(r"blk\.(\d+)\.(.*)", t.name)
        name, bid = (f"blk.N.{m.group(2)}", m.group(1)) if m else (t.name, "")
        blocks.setdefault((name, tuple(int(d) for d in t.shape), t.tensor_type.name), []).append(bid)
    tensors = [f"{name} {list(shape)} {ttype}" + (f" (blocks {','.join(bids)})" if bids != [""] else "")
               for (name, shape, ttype), bids in blocks.items()]
    return arch, keys, tensors


def llama_logits(path: Path, tokens: np.ndarray, work: Path) -> tuple[np.ndarray | None, str]:
    np.save(work / "tokens.npy", tokens)
    proc = subprocess.run([sys.executable, "-c", _LOGITS_CHILD, str(path), str(work / "tokens.npy"),
                           str(work / "logits.npy")], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0 or not (work / "logits.npy").is_file():
        return None, f"llama.cpp (exit {proc.returncode}): {last_line(proc.stderr)}"
    return np.load(work / "logits.npy"), ""


def survey(fixture: str) -> Row:
    src = fixture_path(fixture)
    config = json.loads((src / "config.json").read_text())
    row = Row(fixture, ", ".join(config.get("architectures") or ["?"]))
    notes = []
    with tempfile.TemporaryDirectory(prefix=f"survey-{fixture}-") as tmp:
        work = Path(tmp)
        ok16, why16 = convert(src, work / "f16.gguf", "f16")
        row.f16 = "yes" if ok16 else "no"
        ok32, why32 = convert(src, work / "f32.gguf", "f32")
        row.f32 = "yes" if ok32 else "no"
        # The same failure twice is said once.
        notes += [why32] if why32 else []
        notes += [why16] if why16 and why16.partition(": ")[2] != why32.partition(": ")[2] else []
        if ok32:
            row.arch, row.keys, row.tensors = contents(work / "f32.gguf")
            ref = np.load(src / "reference.npz")
            logits, why = llama_logits(work / "f32.gguf", ref["tokens"], work)
            if logits is None:
                row.loads = "no"
                notes.append(why)
            else:
                row.loads = "yes"
                want = ref["logits"]
                row.max_abs = float(np.max(np.abs(logits - want)))
                row.rel = row.max_abs / float(np.max(np.abs(want)))
    if fixture in NO_MTP:
        notes.append("converted with --no-mtp")
    row.notes = "; ".join(notes)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fixtures", nargs="*", metavar="FIXTURE", help="default: every one of NEW_FIXTURES")
    names = parser.parse_args().fixtures or list(NEW_FIXTURES)
    if missing := [n for n in names if not (fixture_path(n) / "reference.npz").is_file()]:
        parser.error(f"no fixture with a reference.npz under {PENDING} or {MODELS}: {', '.join(missing)}")
    print(HEADER)
    rows = []
    for name in names:
        rows.append(survey(name))
        print(rows[-1].markdown(), flush=True)
    for row in rows:
        if row.arch != "-":
            print(f"\n#### {row.fixture}: what the converter's F32 file holds ({row.arch})\n")
            print("\n".join(f"    {line}" for line in row.keys + row.tensors))


if __name__ == "__main__":
    main()
