"""qconvert/target.py: the knapsack that picks each tensor's type within a budget, and the error
estimates it weighs."""

from __future__ import annotations

import doctest
import itertools

import gguf
import numpy as np
import pytest

from qconvert import quants, target
from qconvert.errors import UsageError
from qconvert.target import Item, candidate_types, sample_ranges, solve, tensor_errors

T = gguf.GGMLQuantizationType


def test_doctests() -> None:
    assert doctest.testmod(target).failed == 0


def brute_force(items: list[Item], budget: int) -> float:
    best = np.inf
    for pick in itertools.product(*(range(len(it.types)) for it in items)):
        if sum(it.nbytes[j] for it, j in zip(items, pick)) <= budget:
            best = min(best, sum(it.damage[j] for it, j in zip(items, pick)))
    return best


def random_items(rng: np.random.Generator, n: int) -> list[Item]:
    items = []
    for k in range(n):
        m = int(rng.integers(1, 5))
        sizes = np.sort(rng.integers(1, 60, m))
        damage = np.sort(rng.random(m))[::-1]  # bigger types, less damage (not required by solve)
        items.append(Item(f"t{k}", tuple([T.Q4_0] * m), tuple(int(s) for s in sizes), tuple(float(d) for d in damage)))
    return items


@pytest.mark.parametrize("seed", range(40))
def test_solve_is_the_optimum_within_the_budget(seed: int) -> None:
    rng = np.random.default_rng(seed)
    items = random_items(rng, int(rng.integers(1, 6)))
    smallest, largest = sum(min(it.nbytes) for it in items), sum(max(it.nbytes) for it in items)
    budget = int(rng.integers(smallest, largest + 1))
    pick = solve(items, budget, units=budget)  # one byte a unit (or less): exact
    assert sum(it.nbytes[j] for it, j in zip(items, pick)) <= budget
    assert sum(it.damage[j] for it, j in zip(items, pick)) == pytest.approx(brute_force(items, budget))


@pytest.mark.parametrize("seed", range(10))
def test_coarse_units_never_exceed_the_budget(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    items = random_items(rng, 6)
    budget = sum(min(it.nbytes) for it in items) + int(rng.integers(0, 80))
    pick = solve(items, budget, units=7)
    assert sum(it.nbytes[j] for it, j in zip(items, pick)) <= budget


def test_a_budget_below_the_smallest_types_is_refused() -> None:
    items = [Item("a", (T.Q4_0, T.Q8_0), (10, 20), (2.0, 1.0))]
    with pytest.raises(UsageError, match="smallest types take 10"):
        solve(items, 9)


def test_candidates_fit_the_rows() -> None:
    assert all(576 % quants.block_size(t) == 0 for t in candidate_types(576))
    assert T.Q4_K not in candidate_types(576) and T.Q4_K in candidate_types(512)
    bits = [quants.get(t).bits for t in candidate_types(512)]
    assert bits == sorted(bits) and candidate_types(512)[-1] == T.F16


@pytest.mark.parametrize("n_rows, per_part", [(10_000, 10_000), (4096, 512), (300, 100), (257, 257)])
def test_sample_ranges_stay_inside_one_expert(n_rows: int, per_part: int) -> None:
    ranges = sample_ranges(n_rows, per_part)
    assert all(0 <= lo < hi <= n_rows and lo // per_part == (hi - 1) // per_part for lo, hi in ranges)
    assert all(a[1] <= b[0] for a, b in zip(ranges, ranges[1:]))
    total = sum(hi - lo for lo, hi in ranges)  # groups crossing into the next expert are cut there
    assert total == n_rows if n_rows <= target.SAMPLE_ROWS else target.SAMPLE_ROWS // 2 <= total <= target.SAMPLE_ROWS
    assert sample_ranges(n_rows, per_part) == ranges  # reproducible


def test_errors_rank_the_types_and_a_full_sample_is_exact() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((128, 512)).astype(np.float32)
    types = [T.Q2_K, T.Q4_K, T.Q6_K, T.Q8_0]
    e = tensor_errors("w", lambda lo, hi: x[lo:hi], 128, 512, 128, types, None)
    assert e.sampled_rows == 128 and not e.weighted
    assert e.errors[T.Q8_0] < e.errors[T.Q6_K] < e.errors[T.Q4_K] < e.errors[T.Q2_K]
    back = quants.get(T.Q4_K).dequantize_blocks(quants.quantize_rows(T.Q4_K, x).reshape(-1, 144)).reshape(x.shape)
    assert e.errors[T.Q4_K] == pytest.approx(float(((x.astype(np.float64) - back) ** 2).sum()))


def test_a_sampled_estimate_is_close_to_the_whole_tensors_error() -> None:
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((4096, 256)) * np.linspace(0.5, 2, 4096)[:, None]).astype(np.float32)
    whole = tensor_errors("w", lambda lo, hi: x[lo:hi], 4096, 256, 4096, [T.Q4_K], None)
    assert whole.sampled_rows == target.SAMPLE_ROWS
    back = quants.get(T.Q4_K).dequantize_blocks(quants.quantize_rows(T.Q4_K, x).reshape(-1, 144)).reshape(x.shape)
    truth = float(((x.astype(np.float64) - back) ** 2).sum())
    assert whole.errors[T.Q4_K] == pytest.approx(truth, rel=0.1)


def test_the_importance_matrix_weighs_the_columns() -> None:
    """A column the importance matrix gives no weight costs nothing, the others count by their weight
    relative to the tensor's mean, and the quantizer is given the same weights."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((64, 256)).astype(np.float32)
    w = np.ones((1, 256), np.float32)
    w[0, :128] = 0
    we = tensor_errors("w", lambda lo, hi: x[lo:hi], 64, 256, 64, [T.Q4_K], w)
    assert we.weighted
    back = quants.get(T.Q4_K).dequantize_blocks(quants.quantize_rows(T.Q4_K, x, w[0]).reshape(-1, 144))
    d = (x.astype(np.float64) - back.reshape(x.shape)) ** 2
    assert we.errors[T.Q4_K] == pytest.approx(2 * float(d[:, 128:].sum()))  # weights relative to their mean, 0.5


# -- the CLI: quantize --target-size / --target-bpw --------------------------------------------

K256 = "llama-k256-bf16"  # rows of 256: every K type is a candidate


def sizes(data: dict) -> tuple[int, float]:
    return data["bytes"], data["bits_per_weight"]


@pytest.fixture(scope="module")
def k256_q4km(tmp_path_factory):
    from conftest import MODELS, run_json

    out = tmp_path_factory.mktemp("target") / "q4km.gguf"
    proc, data = run_json("quantize", MODELS / K256, "-t", "Q4_K_M", "-o", out)
    assert proc.returncode == 0, proc.stderr
    return out, data


def test_a_target_size_file_fits_runs_and_beats_the_mix_of_that_size(k256_q4km, tmp_path) -> None:
    """At Q4_K_M's size, the planned file is no larger, llama.cpp runs it, the plan's error (the
    quantity it minimizes) is no larger, and its logits are no further from the checkpoint's than
    Q4_K_M's are by more than noise."""
    from conftest import MODELS, llama_logits, relative_error, run_json

    q4km, q4km_data = k256_q4km
    budget = q4km_data["bytes"]
    dry_proc, plan = run_json("quantize", MODELS / K256, "--target-size", str(budget), "--dry-run")
    assert dry_proc.returncode == 0, dry_proc.stderr
    out = tmp_path / "t.gguf"
    proc, made = run_json("quantize", MODELS / K256, "--target-size", str(budget), "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert made["bytes"] == plan["bytes"] == out.stat().st_size <= budget
    assert made["type"] == f"target-size={budget}"
    assert [(t["name"], t["type"]) for t in made["tensors"]] == [(t["name"], t["type"]) for t in plan["tensors"]]
    assert len({t["type"] for t in made["tensors"]}) >= 3  # a mix, not one type everywhere
    assert all("unweighted: no imatrix" in t["reason"] for t in made["tensors"] if t["reason"].startswith("target"))
    ref = np.load(MODELS / K256 / "reference.npz")
    ours, theirs = (relative_error(llama_logits(p, ref["tokens"]), ref["logits"]) for p in (out, q4km))
    assert np.isfinite(ours) and ours <= theirs * 1.25, (ours, theirs)


def test_a_target_bpw_file_stays_within_it_and_the_plan_is_reproducible() -> None:
    from conftest import MODELS, run_json

    runs = [run_json("quantize", MODELS / K256, "--target-bpw", "4.5", "--dry-run")[1] for _ in range(2)]
    assert runs[0]["tensors"] == runs[1]["tensors"] and runs[0]["bits_per_weight"] <= 4.5
    assert runs[0]["type"] == "target-bpw=4.5"


def test_with_an_importance_matrix_the_errors_are_weighted(tmp_path) -> None:
    from conftest import MODELS, run_json, write_gguf_imatrix
    from qconvert.convert import prepare

    rng = np.random.default_rng(3)
    entries = {r.gguf_name: (rng.random(r.shape[-1]).astype(np.float32) * 5, np.full(1, 3, np.float32))
               for r in prepare(MODELS / K256, "Q8_0").rows if len(r.shape) == 2 and r.qtype != T.F32}
    write_gguf_imatrix(tmp_path / "im.gguf", entries, chunks=3)
    proc, plan = run_json("quantize", MODELS / K256, "--target-bpw", "4.5", "--imatrix", tmp_path / "im.gguf",
                          "--dry-run")
    assert proc.returncode == 0, proc.stderr
    reasons = [t["reason"] for t in plan["tensors"] if t["reason"].startswith("target")]
    assert reasons and not any("unweighted" in r for r in reasons)


@pytest.mark.parametrize("args, message", [
    (["--target-size", "1K"], "--target-size 1000: too small for this model; the smallest file"),
    (["--target-size", "4.5Q"], "--target-size '4.5Q': expected a size"),
    (["--target-bpw", "0"], "--target-bpw 0: expected bits per weight"),
    (["--target-size", "1G", "--target-bpw", "4"], "give one budget, not both"),
    (["--target-bpw", "4", "--pure"], "--target-bpw chooses every tensor's type"),
])
def test_budgets_that_cannot_be_met_or_read_are_refused_in_one_line(args, message, tmp_path) -> None:
    from conftest import MODELS, run_cli
    from test_cli_errors import assert_clean_failure

    proc = run_cli("quantize", MODELS / K256, *args, "-o", tmp_path / "x.gguf")
    assert_clean_failure(proc, tmp_path / "x.gguf", message, code=2)
