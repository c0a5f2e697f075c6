"""Importance matrices as llama.cpp's llama-imatrix writes them, read as llama-quantize reads them.

Two formats (llama.cpp common/imatrix-loader.cpp):
- GGUF: for every weight tensor NAME, F32 tensors `NAME.in_sum2` (sums of squared activations,
  n_expert x n_per_row) and `NAME.counts` (tokens seen, one per expert), plus the keys
  imatrix.datasets, imatrix.chunk_count and imatrix.chunk_size. The importance is
  in_sum2 / round(count) per expert; an expert that saw no token gets all ones.
- legacy .dat: int32 n_entries; per entry int32 name length, name, int32 ncall, int32 nval,
  float32[nval] (already averaged per call, times ncall); then optionally int32 chunk count and
  int32 length + dataset name. The importance is values / ncall (values as stored if ncall is 0).

`quantize.imatrix.*` metadata is recorded as llama-quantize records it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import gguf
import numpy as np

from .errors import UsageError

MAX_KV_STRING = 127  # llama-quantize stores these through a 128-byte kv override buffer


@dataclass
class Imatrix:
    path: str                                   # as the user gave it (recorded in metadata)
    entries: dict[str, np.ndarray] = field(default_factory=dict)  # GGUF tensor name -> f32 weights
    datasets: list[str] = field(default_factory=list)
    chunk_count: int = 0

    def for_tensor(self, name: str, n_per_row: int, n_expert: int = 1) -> np.ndarray | None:
        """The weights for a tensor's rows (n_expert x n_per_row), or None when the file has no
        entry for it. A size mismatch is an error, except for the token embedding, which
        llama-quantize quantizes without weights in that case."""
        w = self.entries.get(name)
        if w is None:
            return None
        if w.size != n_per_row * n_expert:
            if name in ("token_embd.weight", "per_layer_token_embd.weight"):
                return None
            raise UsageError(f"imatrix {self.path}: {name} has {w.size} weights, the tensor needs "
                             f"{n_per_row * n_expert}; was the imatrix computed for another model?")
        return w.reshape(n_expert, n_per_row)

    def metadata(self) -> list[tuple[str, object, gguf.GGUFValueType]]:
        V = gguf.GGUFValueType
        md: list[tuple[str, object, gguf.GGUFValueType]] = [
            ("quantize.imatrix.file", self.path[:MAX_KV_STRING], V.STRING)]
        if self.datasets:
            md.append(("quantize.imatrix.dataset", self.datasets[0][:MAX_KV_STRING], V.STRING))
        md.append(("quantize.imatrix.entries_count", len(self.entries), V.UINT32))
        if self.chunk_count > 0:
            md.append(("quantize.imatrix.chunks_count", self.chunk_count, V.UINT32))
        return md


def load_imatrix(path: str | Path) -> Imatrix:
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"imatrix file {path} does not exist")
    with open(p, "rb") as f:
        magic = f.read(4)
    imatrix = load_gguf(p, str(path)) if magic == b"GGUF" else load_legacy(p, str(path))
    if not imatrix.entries:
        raise UsageError(f"imatrix {path} holds no entries")
    for name, w in imatrix.entries.items():
        if not np.all(np.isfinite(w)):
            raise UsageError(f"imatrix {path}: {name} contains non-finite values")
    return imatrix


def load_gguf(p: Path, shown: str) -> Imatrix:
    try:
        reader = gguf.GGUFReader(p)
    except (ValueError, OSError) as e:
        raise UsageError(f"imatrix {shown} is not a readable GGUF file ({e})") from None
    fields = reader.fields
    if not all(k in fields for k in ("imatrix.datasets", "imatrix.chunk_count", "imatrix.chunk_size")):
        raise UsageError(f"imatrix {shown} lacks imatrix.datasets/chunk_count/chunk_size metadata")
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, np.ndarray] = {}
    for t in reader.tensors:
        for suffix, into in ((".in_sum2", sums), (".counts", counts)):
            if t.name.endswith(suffix):
                if t.tensor_type != gguf.GGMLQuantizationType.F32:
                    raise UsageError(f"imatrix {shown}: {t.name} must be F32")
                into[t.name[: -len(suffix)]] = np.asarray(t.data, dtype=np.float32).reshape(-1)
    if set(sums) != set(counts):
        odd = sorted(set(sums) ^ set(counts))
        raise UsageError(f"imatrix {shown}: sums and counts do not pair up for {', '.join(odd[:3])}")
    out = Imatrix(shown, datasets=[str(d) for d in fields["imatrix.datasets"].contents()],
                  chunk_count=int(fields["imatrix.chunk_count"].contents()))
    for name in sorted(sums):
        s, c = sums[name], counts[name]
        # one row of sums per count (per expert); tools/quantize's load_imatrix divides
        # sums.size() by counts.size() unchecked, so a file where that fails has no meaning
        if c.size == 0 or s.size % c.size:
            raise UsageError(f"imatrix {shown}: {name} has {s.size} sums for {c.size} counts, "
                             "not one row of sums per count; is the file corrupt?")
        per = s.reshape(c.size, -1)
        # counts are stored as floats and rounded to integers (std::lround) before dividing
        n = (np.floor(np.abs(c.astype(np.float64)) + 0.5) * np.sign(c)).astype(np.float32)
        w = np.ones_like(per)
        seen = n > 0
        w[seen] = per[seen] / n[seen, None]
        out.entries[name] = w.reshape(-1)
    return out


def load_legacy(p: Path, shown: str) -> Imatrix:
    data = p.read_bytes()
    pos = 0

    def take(fmt: str):
        nonlocal pos
        size = struct.calcsize(fmt)
        if pos + size > len(data):
            raise UsageError(f"imatrix {shown} is truncated or not an imatrix file")
        vals = struct.unpack_from(fmt, data, pos)
        pos += size
        return vals

    (n_entries,) = take("<i")
    if n_entries < 1 or n_entries > 1_000_000:
        raise UsageError(f"imatrix {shown} is not an imatrix file (neither GGUF nor the legacy format)")
    out = Imatrix(shown)
    for _ in range(n_entries):
        (length,) = take("<i")
        if not 0 < length < 4096:
            raise UsageError(f"imatrix {shown} is corrupt (entry name length {length})")
        name = data[pos:pos + length].decode("utf-8", "replace")
        pos += length
        ncall, nval = take("<ii")
        if nval < 1:
            raise UsageError(f"imatrix {shown} is corrupt ({name} has {nval} values)")
        values = np.array(take(f"<{nval}f"), dtype=np.float32)
        out.entries[name] = values / np.float32(ncall) if ncall > 0 else values
    if pos + 4 <= len(data):
        (out.chunk_count,) = take("<i")
        if pos + 4 <= len(data):
            (length,) = take("<i")
            if length > 0 and pos + length <= len(data):
                out.datasets.append(data[pos:pos + length].decode("utf-8", "replace"))
    return out
