"""Parsing of llama-quantize-style option values: types, PATTERN=TYPE, KEY=TYPE:VALUE."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import gguf

from .errors import UsageError

T = gguf.GGMLQuantizationType
V = gguf.GGUFValueType


def parse_type(text: str, option: str) -> T:
    """A GGML type by name, case-insensitive (as llama-quantize's parse_ggml_type). A type qconvert
    cannot write is accepted here and refused by the planner, naming the tensors that would need it."""
    from . import quants

    qtype = quants.type_named(text)
    if qtype is None:
        raise UsageError(f"{option}: unknown type {text!r}; use a GGML type: "
                         f"{', '.join(t.name for t in quants.SUPPORTED)}")
    return qtype


def parse_tensor_type(text: str) -> tuple[str, T]:
    """`PATTERN=TYPE`: a regular expression searched in GGUF tensor names, and its type."""
    pattern, sep, qtype = text.partition("=")
    if not sep or not pattern or not qtype:
        raise UsageError(f"--tensor-type {text!r}: expected PATTERN=TYPE, e.g. attn_v=q8_0")
    try:
        re.compile(pattern.lower())
    except re.error as e:
        raise UsageError(f"--tensor-type {text!r}: bad regular expression ({e})") from None
    return pattern, parse_type(qtype, "--tensor-type")


@dataclass(frozen=True)
class KVOverride:
    key: str
    value: Any
    vtype: V


def parse_kv_override(text: str) -> KVOverride:
    """`KEY=TYPE:VALUE` with TYPE int, float, bool or str, written as llama-quantize writes them
    (int as uint32 of the absolute value, float as float32, str of at most 127 characters)."""
    key, sep, rest = text.partition("=")
    kind, colon, value = rest.partition(":")
    if not sep or not key or not colon or len(key) >= 128:
        raise UsageError(f"--override-kv {text!r}: expected KEY=TYPE:VALUE, e.g. general.name=str:Mine")
    try:
        if kind == "int":
            return KVOverride(key, abs(int(value)), V.UINT32)
        if kind == "float":
            return KVOverride(key, float(value), V.FLOAT32)
        if kind == "bool" and value in ("true", "false"):
            return KVOverride(key, value == "true", V.BOOL)
        if kind == "str" and len(value) <= 127:
            return KVOverride(key, value, V.STRING)
    except ValueError:
        pass
    raise UsageError(f"--override-kv {text!r}: TYPE must be int, float, bool (true/false) or str "
                     "(at most 127 characters), with a value of that type")


# gguf-split's --split-max-size units: powers of 1000 (split_str_to_n_bytes: "M" is 1000 * 1000)
SIZE_UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def parse_size(text: str, option: str = "--split-max-size", decimals: bool = False) -> int:
    """A byte count: a positive whole number (or, with `decimals`, a decimal one: 4.5G), optionally
    followed by K, M, G or T (powers of 1000, as llama.cpp's gguf-split reads them; case-insensitive).

    >>> parse_size("50G"), parse_size("300m"), parse_size("4096"), parse_size("4.5G", decimals=True)
    (50000000000, 300000000, 4096, 4500000000)
    """
    number = r"\d+(?:\.\d*)?|\.\d+" if decimals else r"\d+"
    m = re.fullmatch(rf"\s*({number})\s*([KMGT]?)\s*", text, re.IGNORECASE)
    if m is None or float(m[1]) <= 0:
        example = "4.5G or 800M" if decimals else "50G or 300M"
        raise UsageError(f"{option} {text!r}: expected a size in bytes, or with K, M, G or T (powers of 1000, as "
                         f"gguf-split), e.g. {example}")
    return int(float(m[1]) * SIZE_UNITS[m[2].upper()]) if decimals else int(m[1]) * SIZE_UNITS[m[2].upper()]


def parse_target(size: str | None, bpw: float | None):
    """--target-size / --target-bpw as a target.Budget (None when neither is given). A size is bytes,
    or a decimal number with K, M, G or T (powers of 1000, as --split-max-size): 4.5G, 800M."""
    from .target import Budget

    if size is not None and bpw is not None:
        raise UsageError("--target-size and --target-bpw: give one budget, not both")
    if bpw is not None:
        if not 0 < bpw <= 32:
            raise UsageError(f"--target-bpw {bpw:g}: expected bits per weight between 0 and 32, e.g. 4.25")
        return Budget(bpw=bpw)
    return None if size is None else Budget(nbytes=parse_size(size, "--target-size", decimals=True))
