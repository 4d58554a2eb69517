"""A local stand-in for the Hugging Face Hub's HTTP API (tests and benchmarks only).

This machine has no network, so tests cannot reach huggingface.co. This small HTTP
server (stdlib `http.server` in a thread, on 127.0.0.1) serves model and dataset
repositories from local folders the way the Hub does for exactly the calls that
`huggingface_hub`'s real client makes when `llmft download-model hf://...` or
`llmft download-data hf://datasets/...` runs with `HF_ENDPOINT` pointed here:

- `GET /api/models/{repo}[/revision/{rev}]` (`HfApi.model_info`) and
  `GET /api/datasets/{repo}[/revision/{rev}]` (`HfApi.dataset_info`, `repo_type=dataset`):
  JSON with `id`, `sha` (the commit), `gated`, `private`, and `siblings` with
  `rfilename`, `size`, `blobId` (git blob sha1) and, for LFS files,
  `lfs: {sha256, size, pointerSize}`.
- `HEAD|GET /{repo}/resolve/{rev}/{path}` (`hf_hub_download`; a dataset's URL is
  `/datasets/{repo}/resolve/...`): a regular file
  answers 200 with `ETag` (the git blob sha1), `X-Repo-Commit` and
  `Content-Length`. An LFS file answers 302 to a "CDN" URL on another origin
  (`localhost` instead of `127.0.0.1`, as the Hub redirects to its CDN host), with
  `X-Linked-Size`, `X-Linked-Etag` (the sha256) and `X-Repo-Commit` on the
  redirect, which is where the client reads them.
- Errors carry the Hub's `X-Error-Code` header, which the client turns into typed
  exceptions: unknown repository 401 `RepoNotFound` (404 when a token was sent),
  unknown revision 404 `RevisionNotFound`, unknown file 404 `EntryNotFound`, a gated
  repository's files 401 `GatedRepo` without a token and 403 with a token that has
  no access. A private repository is, for a caller without one of its tokens,
  exactly an unknown one.

A repository can hold several commits (`add_revision`): branches and tags name
commits, and a full commit hash resolves too. Models and datasets live in separate
tables, as on the Hub (`repos` and `datasets`).

`bytes_per_second` caps the total bandwidth of file bodies (shared by all
connections, like one network link), so a benchmark can make downloading cost
time. `requests` records every request as (method, path), so tests can assert
what was (not) downloaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".model", ".onnx", ".msgpack", ".h5")
# Dataset repositories also keep their data files in LFS (the Hub's default .gitattributes for datasets).
DATASET_LFS_SUFFIXES = (*LFS_SUFFIXES, ".parquet", ".arrow")
LFS_MIN_SIZE = 10 * 1024 * 1024  # the Hub stores files above 10 MB in LFS
CHUNK = 1024 * 1024


def git_blob_sha1(data_or_path: bytes | Path) -> str:
    """The id git gives a file's contents (what the Hub reports as `blobId` / ETag)."""
    if isinstance(data_or_path, bytes):
        data = data_or_path
        return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    path = Path(data_or_path)
    digest = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class RepoFile:
    path: Path
    size: int
    blob_id: str
    sha256: str | None  # set for LFS files

    @property
    def is_lfs(self) -> bool:
        return self.sha256 is not None


@dataclass
class Repo:
    repo_id: str
    commit: str  # the first commit (what `add_repo` published)
    files: dict[str, RepoFile]  # the first commit's files
    branches: dict[str, str] = field(default_factory=dict)  # branch or tag -> commit
    gated: bool = False
    tokens: frozenset[str] = frozenset()  # tokens with access to a gated or private repo
    private: bool = False
    repo_type: str = "model"
    commits: dict[str, dict[str, RepoFile]] = field(default_factory=dict)  # every commit's files

    def resolve(self, revision: str) -> str | None:
        if revision in self.branches:
            return self.branches[revision]
        return revision if revision in self.commits else None

    def files_at(self, commit: str) -> dict[str, RepoFile]:
        return self.commits.get(commit, self.files)


class _Throttle:
    """A token bucket shared by every response body: total bytes/s across connections."""

    def __init__(self, bytes_per_second: float | None):
        self.rate = bytes_per_second
        self.lock = threading.Lock()
        self.next_free = time.monotonic()

    def wait(self, amount: int) -> None:
        if not self.rate:
            return
        with self.lock:
            now = time.monotonic()
            start = max(now, self.next_free)
            self.next_free = start + amount / self.rate
            delay = self.next_free - now
        if delay > 0:
            time.sleep(delay)


class HubStandIn:
    """Serve local folders as Hub model repositories on 127.0.0.1 (see the module docstring)."""

    def __init__(self, bytes_per_second: float | None = None):
        self.repos: dict[str, Repo] = {}  # models
        self.datasets: dict[str, Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self.throttle = _Throttle(bytes_per_second)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ setup

    def add_repo(
        self,
        repo_id: str,
        folder: Path,
        *,
        gated: bool = False,
        tokens: tuple[str, ...] = (),
        branches: tuple[str, ...] = ("main",),
        lfs_suffixes: tuple[str, ...] | None = None,
        private: bool = False,
        repo_type: str = "model",
    ) -> Repo:
        """Publish every file under `folder` as repository `repo_id` (one commit, on `branches`).

        `repo_type="dataset"` publishes a dataset repository (the Hub keeps those apart from models).
        A `private` repository answers only callers with one of `tokens`, like a gated one, but hides
        that it exists from everyone else.
        """
        files = _files_of(Path(folder), lfs_suffixes or _lfs_suffixes(repo_type))
        commit = _commit_id(files)
        repo = Repo(
            repo_id,
            commit,
            files,
            {name: commit for name in branches},
            gated,
            frozenset(tokens),
            private,
            repo_type,
            {commit: files},
        )
        self._table(repo_type)[repo_id] = repo
        return repo

    def add_revision(
        self,
        repo_id: str,
        folder: Path,
        branches: tuple[str, ...],
        *,
        repo_type: str = "model",
        lfs_suffixes: tuple[str, ...] | None = None,
    ) -> str:
        """Another commit of `repo_id` with the files under `folder`; `branches` (branch or tag names) move to it."""
        repo = self._table(repo_type)[repo_id]
        files = _files_of(Path(folder), lfs_suffixes or _lfs_suffixes(repo_type))
        commit = _commit_id(files)
        repo.commits[commit] = files
        repo.branches.update({name: commit for name in branches})
        return commit

    def _table(self, repo_type: str) -> dict[str, Repo]:
        if repo_type not in ("model", "dataset"):
            raise ValueError(f"the stand-in serves models and datasets, not {repo_type!r}")
        return self.repos if repo_type == "model" else self.datasets

    def start(self) -> HubStandIn:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="hub-standin", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> HubStandIn:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "start() the stand-in first"
        return self._server.server_address[1]

    @property
    def endpoint(self) -> str:
        """The value for HF_ENDPOINT."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def cdn(self) -> str:
        """Where LFS files are served from: another origin, like the Hub's CDN."""
        return f"http://localhost:{self.port}"

    def downloads(self) -> list[str]:
        """Paths of every file body served (GET on resolve of a regular file, or on the CDN)."""
        return [path for method, path in self.requests if method == "GET" and "/api/" not in path]


def _lfs_suffixes(repo_type: str) -> tuple[str, ...]:
    return DATASET_LFS_SUFFIXES if repo_type == "dataset" else LFS_SUFFIXES


def _files_of(folder: Path, lfs_suffixes: tuple[str, ...]) -> dict[str, RepoFile]:
    files: dict[str, RepoFile] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder).as_posix()
        size = path.stat().st_size
        lfs = relative.endswith(lfs_suffixes) or size >= LFS_MIN_SIZE
        files[relative] = RepoFile(path, size, git_blob_sha1(path), sha256_of(path) if lfs else None)
    return files


def _commit_id(files: dict[str, RepoFile]) -> str:
    return hashlib.sha1(repr(sorted((k, f.blob_id) for k, f in files.items())).encode()).hexdigest()


def _handler_for(hub: HubStandIn):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):  # noqa: A002 - quiet test output
            return

        def do_GET(self):
            self._dispatch(send_body=True)

        def do_HEAD(self):
            self._dispatch(send_body=False)

        # -------------------------------------------------------- routing

        def _dispatch(self, send_body: bool) -> None:
            path = urlsplit(self.path).path
            hub.requests.append((self.command, path))
            if path.startswith("/api/models/"):
                return self._info(hub.repos, unquote(path[len("/api/models/") :]))
            if path.startswith("/api/datasets/"):
                return self._info(hub.datasets, unquote(path[len("/api/datasets/") :]))
            if path.startswith("/lfs-cdn/"):
                return self._cdn(path[len("/lfs-cdn/") :], send_body)
            parts = path.lstrip("/").split("/")
            table = hub.repos
            if parts[0] == "datasets":
                table, parts = hub.datasets, parts[1:]
            if len(parts) >= 5 and parts[2] == "resolve":
                repo_id = f"{parts[0]}/{parts[1]}"
                revision = unquote(parts[3])
                filename = unquote("/".join(parts[4:]))
                return self._resolve(table, repo_id, revision, filename, send_body)
            self._error(404, None, "Not Found")

        def _token(self) -> str | None:
            value = self.headers.get("authorization", "")
            return value[len("Bearer ") :] if value.startswith("Bearer ") else None

        def _repo_or_error(self, table: dict[str, Repo], repo_id: str) -> Repo | None:
            repo = table.get(repo_id)
            if repo is not None and repo.private and self._token() not in repo.tokens:
                repo = None  # a private repository does not exist for those without access
            if repo is None:
                # The Hub hides whether a repo exists from anonymous callers: 401, not 404.
                status = 404 if self._token() else 401
                self._error(status, "RepoNotFound", "Repository not found")
            return repo

        # -------------------------------------------------------- endpoints

        def _info(self, table: dict[str, Repo], rest: str) -> None:
            repo_id, _, revision = rest.partition("/revision/")
            repo = self._repo_or_error(table, repo_id)
            if repo is None:
                return
            commit = repo.resolve(revision or "main")
            if commit is None:
                return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            siblings = []
            for name, item in repo.files_at(commit).items():
                sibling = {"rfilename": name, "size": item.size, "blobId": item.blob_id}
                if item.is_lfs:
                    sibling["lfs"] = {"sha256": item.sha256, "size": item.size, "pointerSize": 134}
                siblings.append(sibling)
            body = {
                "_id": hashlib.md5(repo_id.encode()).hexdigest()[:24],
                "id": repo_id,
                "modelId": repo_id,
                "author": repo_id.split("/")[0],
                "sha": commit,
                "private": repo.private,
                "gated": "manual" if repo.gated else False,
                "disabled": False,
                "tags": [],
                "siblings": siblings,
                "lastModified": "2026-01-01T00:00:00.000Z",
            }
            self._send(200, json.dumps(body).encode(), {"Content-Type": "application/json"}, True)

        def _resolve(self, table: dict[str, Repo], repo_id: str, revision: str, filename: str, send_body: bool) -> None:
            repo = self._repo_or_error(table, repo_id)
            if repo is None:
                return
            commit = repo.resolve(revision)
            if commit is None:
                return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            if repo.gated:
                token = self._token()
                if token is None:
                    return self._error(
                        401,
                        "GatedRepo",
                        f"Access to model {repo_id} is restricted. You must have "
                        "access to it and be authenticated to access it. Please log in.",
                    )
                if token not in repo.tokens:
                    return self._error(
                        403,
                        "GatedRepo",
                        f"Access to model {repo_id} is restricted and you are not in the authorized list.",
                    )
            item = repo.files_at(commit).get(filename)
            if item is None:
                return self._error(
                    404, "EntryNotFound", f"{filename} does not exist on {revision}", {"X-Repo-Commit": commit}
                )
            headers = {"X-Repo-Commit": commit}
            if item.is_lfs:
                location = f"{hub.cdn}/lfs-cdn/{item.sha256}?repo={quote(repo_id, safe='')}"
                headers.update(
                    {
                        "Location": location,
                        "X-Linked-Size": str(item.size),
                        "X-Linked-Etag": f'"{item.sha256}"',
                        "ETag": f'"{item.sha256}"',
                    }
                )
                return self._send(302, b"", headers, send_body)
            headers.update(
                {"ETag": f'"{item.blob_id}"', "Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}
            )
            self._send_file(item, headers, send_body)

        def _cdn(self, sha256: str, send_body: bool) -> None:
            every = [
                item
                for repo in [*hub.repos.values(), *hub.datasets.values()]
                for files in repo.commits.values()
                for item in files.values()
            ]
            for item in every:
                if item.sha256 == sha256:
                    return self._send_file(
                        item,
                        {
                            "ETag": f'"{sha256}"',
                            "Accept-Ranges": "bytes",
                            "Content-Type": "application/octet-stream",
                        },
                        send_body,
                    )
            self._error(404, None, "No such blob")

        # -------------------------------------------------------- responses

        def _error(self, status: int, code: str | None, message: str, extra: dict | None = None) -> None:
            headers = {"Content-Type": "application/json", "X-Error-Message": message, **(extra or {})}
            if code:
                headers["X-Error-Code"] = code
            self._send(status, json.dumps({"error": message}).encode(), headers, self.command != "HEAD")

        def _send(self, status: int, body: bytes, headers: dict, send_body: bool) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if send_body and body:
                self.wfile.write(body)

        def _send_file(self, item: RepoFile, headers: dict, send_body: bool) -> None:
            start, end = 0, item.size
            range_header = self.headers.get("Range", "")
            status = 200
            if range_header.startswith("bytes=") and send_body:
                first, _, last = range_header[len("bytes=") :].partition("-")
                start = int(first or 0)
                end = int(last) + 1 if last else item.size
                status = 206
                headers = {**headers, "Content-Range": f"bytes {start}-{end - 1}/{item.size}"}
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(end - start))
            self.end_headers()
            if not send_body:
                return
            self.wfile.flush()
            with open(item.path, "rb") as handle:
                offset, remaining = start, end - start
                while remaining > 0:  # sendfile: the kernel copies, so serving costs little CPU
                    amount = min(CHUNK, remaining)
                    hub.throttle.wait(amount)
                    sent = os.sendfile(self.connection.fileno(), handle.fileno(), offset, amount)
                    if sent == 0:
                        break
                    offset += sent
                    remaining -= sent

    return Handler


def offline_off(monkeypatch, endpoint: str) -> None:
    """Let `huggingface_hub` talk to the stand-in at `endpoint` in this test process.

    conftest.py sets HF_HUB_OFFLINE=1 so nothing can reach the real Hub; the client
    reads that flag once at import, so it is switched off on the module as well.
    """
    import huggingface_hub
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    # A token stored on the developer's machine (~/.cache/huggingface/token) must not leak into tests.
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)


def subprocess_environment(endpoint: str, base: dict | None = None) -> dict:
    """Environment for an `llmft` child process that uses the stand-in as its Hub."""
    import os

    env = dict(base if base is not None else os.environ)
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN"):
        env.pop(name, None)
    env["HF_ENDPOINT"] = endpoint
    return env


def main(argv: list[str] | None = None) -> None:
    """Serve a folder as a Hub repository until killed (for benchmarks: a source in its own process).

        python tests/hub_standin.py ORG/NAME FOLDER [--bytes-per-second N]

    Prints one line, `endpoint <url>`, once it is ready.
    """
    import argparse
    import sys

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("repo_id")
    parser.add_argument("folder")
    parser.add_argument("--bytes-per-second", type=float, default=None)
    args = parser.parse_args(argv)
    hub = HubStandIn(bytes_per_second=args.bytes_per_second)
    hub.add_repo(args.repo_id, Path(args.folder))
    hub.start()
    print(f"endpoint {hub.endpoint}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        hub.stop()
        sys.exit(0)


if __name__ == "__main__":
    main()
