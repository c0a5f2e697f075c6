"""A Hugging Face Hub on disk and on localhost, for tests that must not touch the network.

`add_to_cache` writes a repo into a cache folder in huggingface_hub's layout (file_download.py:
`models--org--name/blobs/<etag>`, `snapshots/<commit>/<path>` as relative symlinks to the blobs,
`refs/<branch or tag>` holding the commit; the etag is the git blob sha1 of a regular file and
the sha256 of an LFS one). `FakeHub` serves repos over HTTP with the endpoints snapshot_download
calls (model_info, the tree listing, HEAD/GET resolve) and the Hub's error headers (X-Error-Code),
so that huggingface_hub itself fills a cache (HF_ENDPOINT) and raises its own errors, and records
which files were downloaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

# Files the Hub stores in LFS (its default .gitattributes: weights and other binaries)
LFS_SUFFIXES = (".safetensors", ".bin", ".pth", ".onnx", ".model", ".msgpack", ".h5", ".ot", ".pt", ".gguf")


def is_lfs(path: str) -> bool:
    return path.endswith(LFS_SUFFIXES)


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def etag(path: str, data: bytes) -> str:
    """The blob's name in the cache: the Hub's ETag, a git blob sha1 or, for LFS, the sha256."""
    return hashlib.sha256(data).hexdigest() if is_lfs(path) else git_blob_sha1(data)


def commit_id(seed: str) -> str:
    return hashlib.sha1(seed.encode()).hexdigest()


def read_folder(folder: Path, names: list[str] | None = None) -> dict[str, bytes]:
    """A checkpoint folder's files (or the given ones) as {path in repo: bytes}."""
    files = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if p.is_file() and (names is None or rel in names):
            files[rel] = p.read_bytes()
    return files


def add_to_cache(hub_cache: Path, repo_id: str, commit: str, files: dict[str, bytes],
                 refs: tuple[str, ...] = ("main",)) -> Path:
    """Write one commit of a repo into a cache (HF_HOME/hub) as huggingface_hub would; returns
    the snapshot folder."""
    storage = hub_cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = storage / "snapshots" / commit
    for rel, data in files.items():
        blob = storage / "blobs" / etag(rel, data)
        blob.parent.mkdir(parents=True, exist_ok=True)
        if not blob.exists():
            blob.write_bytes(data)
        link = snapshot / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))  # file_download._create_symlink: relative
    for ref in refs:
        path = storage / "refs" / ref
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(commit)  # no newline, as _cache_commit_hash_for_specific_revision writes it
    return snapshot


@dataclass
class Repo:
    commits: dict[str, dict[str, bytes]]  # commit -> files
    refs: dict[str, str]                  # branch or tag -> commit
    gated: bool = False                   # files need a token (any, here)
    private: bool = False                 # everything needs a token

    def commit_of(self, revision: str) -> str | None:
        return revision if revision in self.commits else self.refs.get(revision)


@dataclass
class FakeHub:
    repos: dict[str, Repo] = field(default_factory=dict)
    downloads: list[tuple[str, str]] = field(default_factory=list)  # (repo id, path) of each GET resolve
    server: ThreadingHTTPServer | None = None

    @property
    def endpoint(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeHub:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_HEAD(self):
                hub.handle(self, head=True)

            def do_GET(self):
                hub.handle(self, head=False)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def handle(self, req: BaseHTTPRequestHandler, head: bool) -> None:
        url = urlsplit(req.path)
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        token = req.headers.get("Authorization", "").removeprefix("Bearer ").strip() or None
        api = parts[:2] == ["api", "models"]
        if api and len(parts) >= 5 and parts[4] in ("revision", "tree"):
            repo_id, kind, rest = "/".join(parts[2:4]), parts[4], parts[5:]
        elif len(parts) >= 5 and parts[2] == "resolve":
            repo_id, kind, rest = "/".join(parts[:2]), "resolve", parts[3:]
        else:
            return self.reply(req, 404, {"error": "no such endpoint"}, head=head)
        repo = self.repos.get(repo_id)
        if repo is None or (repo.private and token is None):
            # the Hub answers 401 to an anonymous request for a missing or private repo
            return self.reply(req, 401 if token is None else 404, {"error": "Repository not found"},
                              {"X-Error-Code": "RepoNotFound"}, head=head)
        # a revision with a slash (refs/pr/1) arrives quoted in the API paths, as path parts in resolve
        revision = rest[0] if kind != "resolve" else None
        if kind == "resolve":
            for i in range(1, len(rest)):
                if repo.commit_of("/".join(rest[:i])) is not None:
                    revision, path = "/".join(rest[:i]), "/".join(rest[i:])
                    break
            else:
                return self.reply(req, 404, {"error": "Revision not found"}, {"X-Error-Code": "RevisionNotFound"},
                                  head=head)
        commit = repo.commit_of(revision)
        if commit is None:
            return self.reply(req, 404, {"error": "Revision not found"}, {"X-Error-Code": "RevisionNotFound"},
                              head=head)
        files = repo.commits[commit]
        if kind == "revision":
            # the fields the Hub always sends (huggingface_hub < 0.24's ModelInfo requires them)
            return self.reply(req, 200, {"_id": commit_id(repo_id)[:24], "id": repo_id, "modelId": repo_id,
                                         "author": repo_id.split("/")[0], "sha": commit, "private": repo.private,
                                         "gated": "auto" if repo.gated else False, "disabled": False,
                                         "downloads": 0, "likes": 0, "tags": [], "library_name": "transformers",
                                         "lastModified": "2026-01-01T00:00:00.000Z",
                                         "createdAt": "2026-01-01T00:00:00.000Z",
                                         "siblings": [{"rfilename": p} for p in files]}, head=head)
        if kind == "tree":
            entries, folders = [], set()
            for p, data in files.items():
                for i in range(1, p.count("/") + 1):
                    folders.add(p.rsplit("/", i)[0])
                entry = {"type": "file", "oid": git_blob_sha1(data), "size": len(data), "path": p}
                if is_lfs(p):
                    entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
                entries.append(entry)
            entries += [{"type": "directory", "oid": commit_id(f), "size": 0, "path": f} for f in sorted(folders)]
            return self.reply(req, 200, entries, head=head)
        if repo.gated and token is None:
            return self.reply(req, 401, {"error": "Access to model is restricted"}, {"X-Error-Code": "GatedRepo"},
                              head=head)
        if path not in files:
            return self.reply(req, 404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"}, head=head)
        data = files[path]
        if not head:
            self.downloads.append((repo_id, path))
        self.reply(req, 200, data, {"X-Repo-Commit": commit, "ETag": f'"{etag(path, data)}"'}, head=head)

    @staticmethod
    def reply(req: BaseHTTPRequestHandler, status: int, body, headers: dict | None = None, *, head: bool) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        req.send_response(status)
        req.send_header("Content-Length", str(len(data)))
        req.send_header("Content-Type", "application/octet-stream" if isinstance(body, bytes) else "application/json")
        for k, v in (headers or {}).items():
            req.send_header(k, v)
        req.end_headers()
        if not head:
            req.wfile.write(data)
