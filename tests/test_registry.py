"""One source of truth per type: the quant registry (qconvert/quants/__init__.py) and gguf's tables.
The mixes' names, the parsers of type and mix names, the lists in error messages and in -t's help
are derived from them; llama.cpp's own tables are the judge of the names and numbers."""

from __future__ import annotations

import re
import sys

import gguf
import numpy as np
import pytest

from conftest import ROOT, run_cli_inprocess
from qconvert import planner, quants
from qconvert.errors import UnsupportedError, UsageError
from qconvert.options import parse_type

sys.path.insert(0, str(ROOT / "scripts"))
from llama_cpp_src import llama_cpp_src  # noqa: E402

T = gguf.GGMLQuantizationType


def llama_quantize_options() -> dict[str, str]:
    """llama-quantize's QUANT_OPTIONS: name -> LLAMA_FTYPE_... (tools/quantize/quantize.cpp)."""
    src = (llama_cpp_src() / "tools" / "quantize" / "quantize.cpp").read_text()
    table = src[src.index("QUANT_OPTIONS"):]
    table = table[:table.index("};")]
    return dict(re.findall(r'\{\s*"(\w+)",\s*(LLAMA_FTYPE_\w+)', table))


def llama_ftypes() -> dict[str, int]:
    """include/llama.h's enum llama_ftype: LLAMA_FTYPE_... -> value."""
    src = (llama_cpp_src() / "include" / "llama.h").read_text()
    return {k: int(v) for k, v in re.findall(r"(LLAMA_FTYPE_\w+)\s*=\s*(\d+)", src)}


def test_every_mix_is_llama_quantizes_of_that_name_and_number() -> None:
    options, ftypes = llama_quantize_options(), llama_ftypes()
    assert len(options) > 20  # the table was found
    for recipe in planner.RECIPES.values():
        assert options.get(recipe.name) == f"LLAMA_FTYPE_{recipe.file_type.name}", recipe.name
        assert ftypes[options[recipe.name]] == recipe.file_type.value, recipe.name


def test_every_registry_entry_agrees_with_ggml_sizes() -> None:
    for qtype, qt in quants.REGISTRY.items():
        assert (qt.name, qt.block_size, qt.type_size) == (qtype.name, *gguf.GGML_QUANT_SIZES[qtype])
        assert qt.bits == qt.type_size * 8 / qt.block_size
        assert qt.is_float == (qtype in (T.F32, T.F16, T.BF16))
    assert quants.get("Q4_0").bits == 4.5 and quants.get("q6_k").bits == 6.5625 and quants.get("F16").bits == 16


@pytest.mark.parametrize("text", ["q4_k", " Q4_K ", "Q4_k"])
def test_type_names_are_read_one_way(text: str) -> None:
    assert quants.type_named(text) is T.Q4_K
    assert parse_type(text, "--tensor-type") is T.Q4_K
    assert quants.get(text).qtype is T.Q4_K


@pytest.mark.parametrize("text", ["q4_k_m", " Q4_K_M", "Q4_K_M "])
def test_mix_names_are_read_one_way(text: str) -> None:
    assert planner.recipe_for(text).name == "Q4_K_M"


def test_unknown_names_list_what_is_supported() -> None:
    with pytest.raises(UsageError) as e:
        parse_type("Q9", "--output-tensor-type")
    assert str(e.value).endswith(", ".join(t.name for t in quants.SUPPORTED))
    with pytest.raises(UnsupportedError) as e:
        planner.recipe_for("Q4_K_X")
    assert str(e.value).endswith(", ".join(planner.available()))
    assert "Q4_K_M" in planner.available() and len(planner.available()) == len(planner.RECIPES)


def test_the_type_option_lists_the_mixes_from_the_planner() -> None:
    text = " ".join(run_cli_inprocess("quantize", "--help").stdout.replace("│", " ").split())
    assert ", ".join(planner.available()) + "." in text


def test_a_type_that_requires_an_importance_matrix_is_refused_without_one(monkeypatch) -> None:
    """ggml_quantize_requires_imatrix: ggml aborts on such a type without one; qconvert refuses in a
    sentence, and quantizes with one as the type's weighted path does."""
    import dataclasses

    q4 = quants.get("Q4_0")
    required = dataclasses.replace(q4, imatrix="required")
    monkeypatch.setitem(quants.REGISTRY, T.Q4_0, required)
    x = np.random.default_rng(0).standard_normal((2, 64)).astype(np.float32)
    with pytest.raises(UnsupportedError, match="Q4_0 needs an importance matrix"):
        quants.quantize_rows("Q4_0", x)
    w = np.linspace(0.5, 2, 64, dtype=np.float32)
    weighted = q4.quantize_blocks(x.reshape(-1, 32), w).reshape(2, -1)
    assert np.array_equal(quants.quantize_rows("Q4_0", x, w), weighted)
