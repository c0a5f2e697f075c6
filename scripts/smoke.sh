#!/usr/bin/env bash
# qconvert as a user gets it: the wheel, built from the source tree, installed in a fresh venv that
# holds only its runtime dependencies; then its console script, run outside the source tree:
# --help, a usage error (exit 2, one line), a tiny conversion of a fixture model, and `verify` of
# the result against the model, and `batch --ray` without Ray (the optional extra) saying how to
# install it.
#
#     bash scripts/smoke.sh PYTHON [WORKDIR]    # WORKDIR (default build/smoke) is emptied first
#
# PYTHON builds the wheel and makes the venv (`make smoke` passes .venv's). Exits non-zero on the
# first check that fails, naming it.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${1:?usage: smoke.sh PYTHON [WORKDIR]}
WORK=$(realpath -m "${2:-$ROOT/build/smoke}")
MODEL=$ROOT/tests/fixtures/models/llama-spm-f32
DEV_ONLY="llama_cpp torch transformers pytest hypothesis ray"

fail() { echo "smoke: FAILED: $*" >&2; exit 1; }
step() { echo "smoke: $*"; }

rm -rf "$WORK"
mkdir -p "$WORK/src" "$WORK/dist" "$WORK/run"

# A clean copy of the tree (tracked and new files, not build output: no .so, no build/), as an
# sdist would hold it, so the wheel compiles its own kernels.
step "building the wheel"
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$WORK/src")
"$PY" -m pip wheel -q --no-deps -w "$WORK/dist" "$WORK/src"
wheel=$(ls "$WORK"/dist/qconvert-*.whl)

step "installing $(basename "$wheel") in a fresh venv"
"$PY" -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install -q "$wheel"
present=$("$WORK/venv/bin/python" -c "import importlib.util as u; print(*[m for m in '$DEV_ONLY'.split() if u.find_spec(m)])")
[ -z "$present" ] || fail "the venv holds dev-only packages: $present"

# No PYTHONPATH, outside the tree: the installed package, not the source
cd "$WORK/run"
qc() { env -i PATH=/usr/bin:/bin HOME="${HOME:-/tmp}" LANG=C.UTF-8 "$WORK/venv/bin/qconvert" "$@"; }

step "qconvert --help"
qc --help >help.txt 2>&1 || fail "qconvert --help exited $?"
grep -q quantize help.txt || fail "qconvert --help does not list quantize"

step "a usage error"
set +e
qc quantize >out.txt 2>err.txt
code=$?
set -e
[ "$code" -eq 2 ] || fail "qconvert quantize (no MODEL) exited $code, not 2: $(cat err.txt)"
[ "$(wc -l <err.txt)" -eq 1 ] || fail "the usage error is not one line: $(cat err.txt)"
grep -q '^error: ' err.txt || fail "the usage error does not start with 'error: ': $(cat err.txt)"

step "qconvert quantize $(basename "$MODEL") -t Q8_0"
qc quantize "$MODEL" -t Q8_0 -o out.gguf --no-progress || fail "the conversion exited $?"
[ -s out.gguf ] || fail "the conversion wrote no out.gguf"

step "qconvert verify out.gguf $(basename "$MODEL")"
qc verify out.gguf "$MODEL" || fail "qconvert verify exited $?"

step "qconvert batch --ray without Ray says how to install it"
printf '[[job]]\nmodel = "%s"\ntypes = ["Q8_0"]\n' "$MODEL" >m.toml
set +e
qc batch m.toml --ray auto >out.txt 2>err.txt
code=$?
set -e
[ "$code" -eq 2 ] || fail "batch --ray without Ray exited $code, not 2: $(cat err.txt)"
grep -q 'pip install "qconvert\[ray\]"' err.txt || fail "batch --ray without Ray does not say how to install it: $(cat err.txt)"

echo "smoke: passed (wheel, --help, usage error, conversion, verify, --ray without Ray)"
