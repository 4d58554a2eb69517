"""The Hugging Face Hub as a source of models and dataset files, through `huggingface_hub`'s own client.

`HfApi.repo_info(..., files_metadata=True)` lists the files of one commit with
their sizes and checksums (sha256 for LFS files, the git blob id otherwise);
`hf_hub_download` fetches each file of that pinned commit into a private scratch
folder. A dataset source may name one file or folder of the repository
(`hf://datasets/org/name/data/`): only those files are listed, with paths relative
to it, so the destination folder receives what the folder holds (or the one file).
`HF_ENDPOINT` (a mirror, or the tests' local stand-in) and `HF_TOKEN` (for gated
and private repositories) are read from the environment. Every failure the user
can fix becomes a one-line `UserError`.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

from llmft.errors import TransientError, UserError
from llmft.staging.sources import Source, SourceFile

DEFAULT_ENDPOINT = "https://huggingface.co"


def hub_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def _progress_bar_class(progress):
    """A silent tqdm class for `hf_hub_download` that feeds our `Progress` instead of drawing a bar."""
    from huggingface_hub.utils import tqdm as hub_tqdm

    class Bar(hub_tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

        def update(self, n=1):
            if progress is not None and n:
                progress.update(n)
            return super().update(n)

    return Bar


# How errors name what the user sets, per repository type: the chart values behind it (the CLI's flags are
# the same words: --revision).
_KEYS = {
    "model": {"id": "modelID", "id_form": "Organization/ModelName", "revision": "modelRevision"},
    "dataset": {"id": "hubDataset.id", "id_form": "Organization/DatasetName", "revision": "hubDataset.revision"},
}


class HubSource(Source):
    """Repository `repo_id` (a model, or a dataset) at `revision` (branch, tag or commit; default main).

    `path` (datasets): one file or folder of the repository; the files are listed relative to it.
    """

    def __init__(self, repo_id: str, revision: str | None = None, repo_type: str = "model", path: str = ""):
        from llmft.staging.sources import _HUB_ID, HubRef

        if not _HUB_ID.match(repo_id):
            raise UserError(f"hf://{repo_id} is not a Hub model id: write hf://Organization/ModelName")
        self.repo_id = repo_id
        self.repo_type = repo_type
        self.kind = "model" if repo_type == "model" else "dataset"
        self.keys = _KEYS[self.kind]
        self.path = path.strip("/")
        self.prefix = ""  # the repository folder the listed paths are relative to (set by list_files)
        self.revision = revision or "main"
        self.endpoint = hub_endpoint()
        self.url = HubRef(repo_type, repo_id, self.path).url
        self.label = f"{self.url}@{self.revision}"
        self.commit: str | None = None
        # huggingface_hub's HTTP client logs every request at INFO: too much for `kubectl logs`.
        logging.getLogger("httpx2").setLevel(logging.WARNING)

    def _token(self) -> str | None:
        from huggingface_hub import get_token

        return os.environ.get("HF_TOKEN") or get_token()

    def list_files(self) -> list[SourceFile]:
        from huggingface_hub import HfApi

        token = self._token()
        try:
            info = HfApi(endpoint=self.endpoint, token=token or False).repo_info(
                self.repo_id, repo_type=self.repo_type, revision=self.revision, files_metadata=True
            )
        except Exception as error:  # noqa: BLE001 - translated below, or re-raised
            raise self._translate(error, token) from None
        self.commit = info.sha
        if info.gated and not token:
            raise self._gated_error(token)
        self.label = f"{self.url}@{self.revision} (commit {str(info.sha)[:12]})"
        files = []
        for sibling in info.siblings or []:
            lfs = sibling.lfs
            files.append(
                SourceFile(
                    sibling.rfilename,
                    lfs.size if lfs else sibling.size,
                    lfs.sha256 if lfs else None,
                    None if lfs else sibling.blob_id,
                )
            )
        if not files:
            raise UserError(f"{self.kind} {self.repo_id} has no files at revision {self.revision}")
        return self._within_path(files)

    def _within_path(self, files: list[SourceFile]) -> list[SourceFile]:
        """The files of `self.path` (all when empty), relative to it; a path that matches nothing is an error."""
        if not self.path:
            return files
        exact = [item for item in files if item.path == self.path]
        if exact:  # one file: the destination gets it under its own name
            self.prefix = self.path.rpartition("/")[0] + "/" if "/" in self.path else ""
        else:  # a folder: the destination gets what it holds
            self.prefix = self.path + "/"
        inside = exact or [item for item in files if item.path.startswith(self.prefix)]
        chosen = [replace(item, path=item.path[len(self.prefix) :]) for item in inside]
        if not chosen:
            names = ", ".join(item.path for item in files[:8]) + ("..." if len(files) > 8 else "")
            raise UserError(
                f"{self.path} is neither a file nor a folder of {self.kind} {self.repo_id} at revision "
                f"{self.revision} (commit {str(self.commit)[:12]}): check the path (chart: hubDataset.path); "
                f"the repository has {names}"
            )
        return chosen

    def fetch(self, item: SourceFile, scratch: Path, progress=None) -> Path:
        from huggingface_hub import hf_hub_download

        token = self._token()
        folder = Path(tempfile.mkdtemp(prefix="hub-", dir=scratch))
        try:
            path = hf_hub_download(
                self.repo_id,
                self.prefix + item.path,
                repo_type=self.repo_type,
                revision=self.commit or self.revision,
                local_dir=folder,
                cache_dir=folder / ".hf-cache",
                endpoint=self.endpoint,
                token=token or False,
                tqdm_class=_progress_bar_class(progress),
            )
        except Exception as error:  # noqa: BLE001
            shutil.rmtree(folder, ignore_errors=True)
            raise self._translate(error, token, self.prefix + item.path) from None
        return Path(path)

    def release(self, item: SourceFile, path: Path) -> None:
        # The file sits in its own folder under scratch, next to huggingface_hub's bookkeeping.
        folder = path
        for _ in (self.prefix + item.path).split("/"):
            folder = folder.parent
        shutil.rmtree(folder, ignore_errors=True)

    # ------------------------------------------------------------ errors

    def _gated_error(self, token: str | None) -> UserError:
        page = f"{self.endpoint}/{'' if self.kind == 'model' else 'datasets/'}{self.repo_id}"
        if token:
            return UserError(
                f"{self.kind} {self.repo_id} is gated and the token in HF_TOKEN has no access to it: "
                f"accept its conditions at {page} with that token's account"
            )
        return UserError(
            f"{self.kind} {self.repo_id} is gated: accept its conditions at {page}, then give a token with "
            "access in HF_TOKEN (chart value hfTokenSecret.name: a Secret holding the token)"
        )

    def _translate(self, error: Exception, token: str | None, filename: str | None = None) -> Exception:
        from huggingface_hub import errors

        if isinstance(error, errors.GatedRepoError):
            return self._gated_error(token)
        if isinstance(error, errors.RepositoryNotFoundError):
            if token:
                private = (
                    "; if it is private, check that the token in HF_TOKEN has access to it"
                    if self.kind == "dataset"
                    else ""
                )
            else:
                private = "; if it is private, give a token with access in HF_TOKEN"
                if self.kind == "dataset":
                    private += " (chart value hfTokenSecret.name: a Secret holding the token)"
            return UserError(
                f"{self.kind} {self.repo_id} not found on the Hub at {self.endpoint}: check {self.keys['id']} "
                f"({self.keys['id_form']}, as on the {self.kind}'s page){private}"
            )
        if isinstance(error, errors.RevisionNotFoundError):
            return UserError(
                f"revision {self.revision!r} not found in {self.kind} {self.repo_id}: check "
                f"{self.keys['revision']} (a branch, tag or commit hash)"
            )
        if isinstance(error, errors.RemoteEntryNotFoundError):
            return TransientError(
                f"file {filename} of {self.kind} {self.repo_id} disappeared from the Hub during the download: run again"
            )
        if isinstance(error, errors.OfflineModeIsEnabled):
            return UserError(f"HF_HUB_OFFLINE is set, so the Hub cannot be reached: unset it to download {self.url}")
        if isinstance(error, errors.HfHubHTTPError):
            status = error.response.status_code if error.response is not None else "?"
            if status == 401:
                return UserError(
                    f"the Hub rejected the token in HF_TOKEN for {self.kind} {self.repo_id} (401): check the "
                    "token (chart: hfTokenSecret)"
                )
            return TransientError(
                f"the Hub at {self.endpoint} answered {status} for {self.repo_id}"
                f"{' file ' + filename if filename else ''}: try again later"
            )
        if _is_connection_error(error):
            return TransientError(
                f"cannot reach the Hugging Face Hub at {self.endpoint} ({type(error).__name__}): "
                "check the pod's network access, or HF_ENDPOINT"
            )
        return error


def _is_connection_error(error: Exception) -> bool:
    import httpx2
    from huggingface_hub.errors import LocalEntryNotFoundError

    if isinstance(error, LocalEntryNotFoundError):  # hf_hub_download's wrapper for "could not connect"
        return True
    return isinstance(error, (httpx2.TransportError, ConnectionError, TimeoutError))
