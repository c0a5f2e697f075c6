"""Describe a GGUF file: metadata (long arrays shortened) and the tensor table."""

from __future__ import annotations

from pathlib import Path

import gguf

from .errors import UsageError


def field_value(field: gguf.ReaderField) -> str:
    value = field.contents()
    if isinstance(value, list):
        head = ", ".join(repr(v) for v in value[:5])
        return f"[{head}{', ...' if len(value) > 5 else ''}] ({len(value)} items)"
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def describe(path: Path, tensors: bool = True) -> str:
    if not path.is_file():
        raise UsageError(f"{path} is not a file")
    try:
        reader = gguf.GGUFReader(path)
    except (ValueError, OSError) as e:
        raise UsageError(f"{path} is not a readable GGUF file ({e})") from None
    lines = [f"{path}: GGUF, {len(reader.fields)} metadata keys, {len(reader.tensors)} tensors"]
    for name, field in reader.fields.items():
        if name.startswith("GGUF."):
            continue
        lines.append(f"  {name} = {field_value(field)}")
    if tensors:
        width = max((len(t.name) for t in reader.tensors), default=6)
        lines.append(f"  {'tensor':<{width}}  {'type':<5} {'shape':<18} bytes")
        for t in reader.tensors:
            shape = "x".join(str(int(d)) for d in t.shape)
            lines.append(f"  {t.name:<{width}}  {t.tensor_type.name:<5} {shape:<18} {int(t.n_bytes)}")
    return "\n".join(lines)
