"""The planner: which type each tensor gets, and the reason it gives."""

from __future__ import annotations

import gguf
import pytest

from conftest import run_cli
from qconvert import quants
from qconvert.errors import UnsupportedError
from qconvert.planner import plan, recipe_for
from qconvert.types import SourceTensor

T = gguf.GGMLQuantizationType


def src(name: str, *shape: int) -> SourceTensor:
    return SourceTensor(name, tuple(shape), name, "BF16")


def types(tensors, recipe: str) -> dict[str, T]:
    return {r.gguf_name: r.qtype for r in plan(tensors, recipe_for(recipe))}


MODEL = [src("token_embd.weight", 1000, 576), src("blk.0.attn_norm.weight", 576),
         src("blk.0.attn_q.weight", 576, 576), src("blk.0.ffn_down.weight", 576, 1536),
         src("output_norm.weight", 576), src("output.weight", 1000, 576)]


@pytest.mark.parametrize("recipe,want", [("F32", T.F32), ("F16", T.F16), ("BF16", T.BF16), ("Q8_0", T.Q8_0)])
def test_uniform_recipes_keep_norms_f32(recipe, want):
    got = types(MODEL, recipe)
    assert got["blk.0.attn_norm.weight"] == got["output_norm.weight"] == T.F32
    assert got["token_embd.weight"] == got["blk.0.attn_q.weight"] == got["output.weight"] == want


def test_q4_0_output_rule_as_llama_quantize():
    got = types(MODEL, "Q4_0")
    assert got["blk.0.attn_q.weight"] == got["token_embd.weight"] == T.Q4_0
    # rows of 576 are not a multiple of 256: llama-quantize writes the output tensor as Q8_0
    assert got["output.weight"] == T.Q8_0
    wide = [src("output.weight", 1000, 512), src("token_embd.weight", 1000, 512)]
    assert types(wide, "Q4_0")["output.weight"] == (T.Q6_K if T.Q6_K in quants.SUPPORTED else T.Q8_0)


def test_tied_embedding_counts_as_output():
    tied = [t for t in MODEL if t.gguf_name != "output.weight"]
    assert types(tied, "Q4_0")["token_embd.weight"] == T.Q8_0
    assert types(MODEL, "Q4_0")["token_embd.weight"] == T.Q4_0


def test_fallback_when_rows_do_not_fit_the_block():
    rows = plan([src("blk.0.attn_q.weight", 64, 48)], recipe_for("Q8_0"))
    assert rows[0].qtype == T.F16
    assert "row length 48 is not a multiple of 32" in rows[0].reason


def test_rope_freqs_and_biases_stay_f32():
    got = types([src("rope_freqs.weight", 32), src("blk.0.attn_q.bias", 64)], "Q8_0")
    assert set(got.values()) == {T.F32}


def test_unknown_recipe_lists_supported():
    with pytest.raises(UnsupportedError, match="Q4_0.*Q8_0|Q8_0.*Q4_0"):
        recipe_for("Q3_X")


def test_sizes_and_bits_per_weight():
    rows = plan([src("blk.0.attn_q.weight", 64, 64)], recipe_for("Q8_0"))
    assert rows[0].nbytes == 64 * 2 * 34  # 2 blocks of 34 bytes a row
    from qconvert.planner import summarize
    assert summarize(rows) == (64 * 2 * 34, 8.5)


def test_dry_run_prints_the_table_and_writes_nothing(tiny_checkpoint, tmp_path):
    proc = run_cli("quantize", tiny_checkpoint, "-t", "Q4_0", "--dry-run", "-o", tmp_path / "x.gguf")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:5] == ["tensor", "shape", "from", "type", "reason"]
    q = next(line for line in lines if line.startswith("blk.0.attn_q.weight"))
    assert " Q4_0 " in q and "F32" in q
    assert "bits per weight" in lines[-1]
    assert not (tmp_path / "x.gguf").exists()
