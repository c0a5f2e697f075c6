"""Print the path of a llama.cpp source tree matching the installed llama-cpp-python.

Dev tool. The tree is the one vendored in the llama-cpp-python source package of the same
version, so `convert_hf_to_gguf.py` and `gguf-py/` in it agree with the llama.cpp that the tests
load GGUF files with. It is fetched once with pip and kept in ~/.cache/qconvert/llama.cpp-VERSION/.

    python scripts/llama_cpp_src.py            # prints the path, fetching the tree if needed

$QCONVERT_LLAMA_CPP_SRC, if set, names a tree to use instead (it is used as it is, unchecked
against the installed version).

Why the pip flags: `pip download` prepares the metadata of every sdist it fetches, which runs the
package's build backend (scikit-build-core). Isolated and with `--no-binary :all:`, that also
forces the backend's own dependencies from source, and pip ends up compiling CMake. So: only
llama-cpp-python comes as an sdist (`--only-binary :all: --no-binary llama-cpp-python`), and when
scikit-build-core is already installed, it is used in place (`--no-build-isolation`), which
prepares metadata without installing or building anything.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

DIST = "llama-cpp-python"
# Files whose presence says a tree is complete; the tree is renamed into place only when it is.
REQUIRED = ("convert_hf_to_gguf.py", "conversion", "gguf-py/gguf")


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "qconvert"


def installed_version() -> str:
    try:
        return importlib.metadata.version(DIST)
    except importlib.metadata.PackageNotFoundError:
        sys.exit(f"{DIST} is not installed; install the test extras: pip install -e '.[test]'")


def is_tree(path: Path) -> bool:
    return all((path / name).exists() for name in REQUIRED)


def pip_download(version: str, dest: Path) -> Path:
    """Fetch the sdist of llama-cpp-python==version into dest, without building anything."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps",
           "--only-binary", ":all:", "--no-binary", DIST, f"{DIST}=={version}", "-d", str(dest)]
    if importlib.util.find_spec("scikit_build_core") is not None:
        cmd.insert(4, "--no-build-isolation")
    subprocess.run(cmd, check=True, stdout=sys.stderr)
    sdists = sorted(dest.glob("*.tar.gz"))
    if len(sdists) != 1:
        sys.exit(f"expected one sdist in {dest}, found {[p.name for p in sdists]}")
    return sdists[0]


def extract_vendored_tree(sdist: Path, dest: Path) -> None:
    """Extract <sdist root>/vendor/llama.cpp/ of the sdist as dest."""
    with tarfile.open(sdist) as tar:
        root = tar.getnames()[0].split("/")[0]
        prefix = f"{root}/vendor/llama.cpp/"
        members = []
        for member in tar.getmembers():
            if member.name.startswith(prefix):
                member.name = member.name[len(prefix):]
                members.append(member)
        if not members:
            sys.exit(f"{sdist.name} has no vendor/llama.cpp/")
        tar.extractall(dest, members=members, filter="data")


def llama_cpp_src(version: str | None = None) -> Path:
    """Path of the llama.cpp tree for `version` (default: the installed llama-cpp-python)."""
    if override := os.environ.get("QCONVERT_LLAMA_CPP_SRC"):
        if not is_tree(Path(override)):
            sys.exit(f"QCONVERT_LLAMA_CPP_SRC={override} lacks one of {REQUIRED}")
        return Path(override)
    version = version or installed_version()
    target = cache_dir() / f"llama.cpp-{version}"
    if is_tree(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".fetch-") as tmp:
        tmp = Path(tmp)
        sdist = pip_download(version, tmp / "sdist")
        tree = tmp / "llama.cpp"
        extract_vendored_tree(sdist, tree)
        if not is_tree(tree):
            sys.exit(f"{sdist.name}: vendor/llama.cpp lacks one of {REQUIRED}")
        if target.exists():  # a partial tree from an older layout; replace it
            shutil.rmtree(target)
        tree.rename(target)
    return target


if __name__ == "__main__":
    print(llama_cpp_src(sys.argv[1] if len(sys.argv) > 1 else None))
