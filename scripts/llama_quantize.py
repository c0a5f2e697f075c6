"""Quantize a GGUF with llama.cpp's own llama-quantize code: the oracle for qconvert's mixes.

Dev tool. Calls `llama_model_quantize` (src/llama-quant.cpp) in the libllama that
llama-cpp-python ships, so the types it picks and the bytes it writes are those of the
`llama-quantize` binary of the same llama.cpp. Give it an F32 (or F16/BF16) GGUF, e.g. from
`scripts/oracle_convert.py CHECKPOINT f32.gguf --outtype f32`:

    python scripts/llama_quantize.py IN.gguf OUT.gguf Q4_K_M [--threads N] [--pure]
        [--output-tensor-type Q8_0] [--token-embedding-type Q8_0] [--leave-output-tensor] [-v]

Importable: `llama_quantize(inp, out, "Q4_K_M", nthread=2)`. TYPE is a llama_ftype name as
llama-quantize spells it (Q4_K_M, Q8_0, F16, ...) or its number. The importable function also
takes what the llama-quantize binary passes to the library after reading its files: importance
matrix data ({tensor name: f32 weights}, already normalized as the binary's load_imatrix does),
kv overrides, and --tensor-type patterns.
"""
from __future__ import annotations

import argparse
import ctypes
import sys
from pathlib import Path

import gguf

# llama_model_quantize_params as include/llama.h declares it (llama-cpp-python 0.3.36's vendored
# llama.cpp). llama-cpp-python mirrors it by hand in llama_cpp.llama_model_quantize_params; if a
# new version adds, drops or moves a field, a ctypes call with the old layout would pass garbage
# silently, so the layout is checked before every call.
C_FIELDS = (
    ("nthread", ctypes.c_int32), ("ftype", ctypes.c_int), ("output_tensor_type", ctypes.c_int),
    ("token_embedding_type", ctypes.c_int), ("allow_requantize", ctypes.c_bool),
    ("quantize_output_tensor", ctypes.c_bool), ("only_copy", ctypes.c_bool), ("pure", ctypes.c_bool),
    ("keep_split", ctypes.c_bool), ("dry_run", ctypes.c_bool), ("imatrix", ctypes.c_void_p),
    ("kv_overrides", ctypes.c_void_p), ("tt_overrides", ctypes.c_void_p), ("prune_layers", ctypes.c_void_p),
    ("max_buf_size", ctypes.c_size_t),
)


class QuantizeError(RuntimeError):
    pass


def check_params_layout() -> None:
    """Raise QuantizeError if llama-cpp-python's ctypes struct is not llama.h's (C_FIELDS)."""
    import llama_cpp

    ours = llama_cpp.llama_model_quantize_params._fields_
    names = [f[0] for f in ours]
    if names != [f[0] for f in C_FIELDS]:
        raise QuantizeError(f"llama_cpp.llama_model_quantize_params fields {names} are not llama.h's "
                            f"{[f[0] for f in C_FIELDS]}; update C_FIELDS from the llama.cpp tree "
                            "(python scripts/llama_cpp_src.py)/include/llama.h")
    for (name, ctype), (_, want) in zip(ours, C_FIELDS):
        if ctypes.sizeof(ctype) != ctypes.sizeof(want):
            raise QuantizeError(f"field {name}: {ctype} is not the size of llama.h's {want}")


def ftype_of(name: str | int) -> gguf.LlamaFileType:
    """A llama_ftype from llama-quantize's spelling ('Q4_K_M', 'f16', 'ALL_F32') or its number."""
    if isinstance(name, int) or str(name).isdigit():
        return gguf.LlamaFileType(int(name))
    key = str(name).upper()
    for candidate in (key, f"MOSTLY_{key}", f"ALL_{key}"):
        if candidate in gguf.LlamaFileType.__members__:
            return gguf.LlamaFileType[candidate]
    names = [n.removeprefix("MOSTLY_").removeprefix("ALL_") for n in gguf.LlamaFileType.__members__
             if n != "GUESSED"]
    raise QuantizeError(f"unknown type {name!r}; llama-quantize types: {', '.join(names)}")


def ggml_type_of(name: str) -> int:
    """A ggml_type number for --output-tensor-type / --token-embedding-type."""
    try:
        return int(gguf.GGMLQuantizationType[name.upper()])
    except KeyError:
        raise QuantizeError(f"unknown ggml type {name!r}") from None


class ImatrixData(ctypes.Structure):  # struct llama_model_imatrix_data
    _fields_ = [("name", ctypes.c_char_p), ("data", ctypes.POINTER(ctypes.c_float)), ("size", ctypes.c_size_t)]


class _KVValue(ctypes.Union):
    _fields_ = [("val_i64", ctypes.c_int64), ("val_f64", ctypes.c_double), ("val_bool", ctypes.c_bool),
                ("val_str", ctypes.c_char * 128)]


class KVOverride(ctypes.Structure):  # struct llama_model_kv_override
    _fields_ = [("tag", ctypes.c_int), ("key", ctypes.c_char * 128), ("value", _KVValue)]


class TensorOverride(ctypes.Structure):  # struct llama_model_tensor_override
    _fields_ = [("pattern", ctypes.c_char_p), ("type", ctypes.c_int)]


def field_type(params: ctypes.Structure, name: str):
    """The ctypes type llama-cpp-python declares for a params field (a typed pointer)."""
    return dict(type(params)._fields_)[name]


KV_TAGS = {int: 0, float: 1, bool: 2, str: 3}  # enum llama_model_kv_override_type


def kv_override_array(overrides: list[tuple[str, object]]) -> ctypes.Array:
    arr = (KVOverride * (len(overrides) + 1))()  # zeroed: the last one's empty key ends the list
    for slot, (key, value) in zip(arr, overrides):
        slot.key = key.encode()
        slot.tag = KV_TAGS[type(value)]
        if isinstance(value, bool):
            slot.value.val_bool = value
        elif isinstance(value, int):
            slot.value.val_i64 = value
        elif isinstance(value, float):
            slot.value.val_f64 = value
        else:
            slot.value.val_str = value.encode()[:127]
    return arr


def llama_quantize(inp: str | Path, out: str | Path, ftype: str | int, *, nthread: int = 0,
                   pure: bool = False, output_tensor_type: str | None = None,
                   token_embedding_type: str | None = None, quantize_output_tensor: bool = True,
                   allow_requantize: bool = False, verbose: bool = False,
                   imatrix: dict | None = None, kv_overrides: list[tuple[str, object]] = (),
                   tensor_types: list[tuple[str, str]] = ()) -> Path:
    """Write `out`, llama-quantize's `ftype` version of the GGUF `inp`; raise QuantizeError on failure.

    Options are llama-quantize's: --pure, --output-tensor-type, --token-embedding-type,
    --leave-output-tensor (quantize_output_tensor=False), --allow-requantize; `imatrix`
    ({name: f32 array}), `kv_overrides` ([(key, int|float|bool|str)]) and `tensor_types`
    ([(pattern, type name)]) as the binary passes them after parsing its options."""
    import llama_cpp
    import llama_cpp._logger

    check_params_layout()
    inp, out = Path(inp), Path(out)
    if not inp.is_file():
        raise QuantizeError(f"{inp} does not exist")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = int(ftype_of(ftype))
    params.nthread = nthread
    params.pure = pure
    # left at GGML_TYPE_COUNT (the default), the mix decides
    if output_tensor_type is not None:
        params.output_tensor_type = ggml_type_of(output_tensor_type)
    if token_embedding_type is not None:
        params.token_embedding_type = ggml_type_of(token_embedding_type)
    params.quantize_output_tensor = quantize_output_tensor
    params.allow_requantize = allow_requantize
    keep = []  # the ctypes arrays must outlive the call
    if imatrix:
        import numpy as np
        data = [np.ascontiguousarray(v, dtype=np.float32) for v in imatrix.values()]
        arr = (ImatrixData * (len(data) + 1))()  # zeroed terminator
        for slot, name, v in zip(arr, imatrix, data):
            slot.name, slot.data, slot.size = name.encode(), v.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), v.size
        keep += [arr, data]
        params.imatrix = ctypes.cast(arr, field_type(params, "imatrix"))
    if kv_overrides:
        arr = kv_override_array(list(kv_overrides))
        keep.append(arr)
        params.kv_overrides = ctypes.cast(arr, field_type(params, "kv_overrides"))
    if tensor_types:
        arr = (TensorOverride * (len(tensor_types) + 1))()  # a null pattern ends the list
        for slot, (pattern, qtype) in zip(arr, tensor_types):
            # the binary lower-cases each pattern as it parses --tensor-type
            slot.pattern, slot.type = pattern.lower().encode(), ggml_type_of(qtype)
        keep.append(arr)
        params.tt_overrides = ctypes.cast(arr, field_type(params, "tt_overrides"))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    log: list[str] = []

    # libllama's log (one warning per fallback tensor) is collected, shown with verbose=True and
    # quoted in the error on failure. llama-cpp-python's own callback is put back afterwards.
    @llama_cpp.llama_log_callback
    def collect(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        log.append(text.decode("utf-8", errors="replace"))
        if verbose:
            sys.stderr.write(log[-1])

    llama_cpp.llama_log_set(collect, ctypes.c_void_p(0))
    try:
        rc = llama_cpp.llama_model_quantize(str(inp).encode(), str(tmp).encode(), ctypes.byref(params))
    finally:
        llama_cpp.llama_log_set(llama_cpp._logger.llama_log_callback, ctypes.c_void_p(0))
    if rc != 0:
        tmp.unlink(missing_ok=True)
        # llama.cpp's reason, e.g. "failed to quantize: requantizing from type q8_0 is disabled"
        why = [line[line.find("failed"):].strip() for line in "".join(log).splitlines() if "failed" in line]
        raise QuantizeError(f"llama_model_quantize({inp.name} -> {ftype}) failed (code {rc}): "
                            + ("; ".join(why[-2:]) or "run with -v for llama.cpp's log"))
    tmp.replace(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inp", type=Path, help="GGUF to quantize (F32/F16/BF16)")
    parser.add_argument("out", type=Path, help="GGUF to write")
    parser.add_argument("type", help="llama-quantize type: Q4_K_M, Q8_0, Q2_K, F16, ... or its number")
    parser.add_argument("--threads", type=int, default=0, help="0 = all cores")
    parser.add_argument("--pure", action="store_true", help="every tensor in the default type")
    parser.add_argument("--output-tensor-type", metavar="TYPE")
    parser.add_argument("--token-embedding-type", metavar="TYPE")
    parser.add_argument("--leave-output-tensor", action="store_true", help="do not quantize output.weight")
    parser.add_argument("--allow-requantize", action="store_true")
    parser.add_argument("-v", "--verbose", action="store_true", help="show llama.cpp's log")
    args = parser.parse_args()
    try:
        llama_quantize(args.inp, args.out, args.type, nthread=args.threads, pure=args.pure,
                       output_tensor_type=args.output_tensor_type,
                       token_embedding_type=args.token_embedding_type,
                       quantize_output_tensor=not args.leave_output_tensor,
                       allow_requantize=args.allow_requantize, verbose=args.verbose)
    except QuantizeError as err:
        sys.exit(str(err))


if __name__ == "__main__":
    main()
