"""What `inspect` reports of a GGUF file or split set: its metadata (arrays as their first
elements) and tensors.

The file is read by gguf_read.read_gguf_set, which checks the whole structure of every file of a
set first: a damaged file is one GGUFError naming what is wrong and where, never a traceback or a
huge allocation. For a member of a split set, the whole set is reported (the first file's
metadata, every file's tensors).
"""

from __future__ import annotations

from pathlib import Path

from .gguf_read import GGUFArray, read_gguf_set
from .report import ArrayValue, InspectFile, InspectReport, InspectTensor, MetadataEntry

def inspect_report(path: Path, tensors: bool = True) -> InspectReport:
    files = read_gguf_set(path)
    info = files[0]
    metadata = []
    for name, f in info.fields.items():
        value = f.value
        if isinstance(value, GGUFArray):
            value = ArrayValue(value.item_type.name, value.count, list(value.head))  # the elements gguf_read keeps
        metadata.append(MetadataEntry(name, f.type.name, value))
    table = None
    if tensors:
        table = [InspectTensor(t.name, t.type.name, list(t.shape), t.offset, t.nbytes, i)
                 for i, f in enumerate(files) for t in f.tensors]
    return InspectReport("inspect", Path(path), [InspectFile(f.path, f.size, len(f.tensors)) for f in files],
                         sum(f.size for f in files), info.version, info.alignment, metadata, table)
