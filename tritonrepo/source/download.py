"""Fetch the files a build needs from the Hugging Face Hub into its cache, after checking there is room for them."""

from __future__ import annotations

import contextlib
import fnmatch
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

from tritonrepo import progress
from tritonrepo.errors import ModelDownloadError, ModelNotFoundError
from tritonrepo.source.checkpoint_files import HUB_PATTERNS

GIB = 1024**3
# Room to keep free besides the download itself: file-system overhead, the build's own output, other users.
SPACE_MARGIN_FRACTION = 0.05
SPACE_MARGIN_BYTES = 1 * GIB


def download_checkpoint(
    repo_id: str,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    token: str | None = None,
    offline: bool = False,
) -> Path:
    """The snapshot folder of `repo_id` at `revision` in the Hugging Face cache, holding the files that match
    HUB_PATTERNS; missing ones are downloaded (huggingface_hub skips files already cached and resumes broken
    transfers). Offline, only the cache is read."""
    from huggingface_hub import HfApi, constants, snapshot_download

    token = token or os.environ.get("HF_TOKEN") or None
    offline = offline or constants.HF_HUB_OFFLINE  # HF_HUB_OFFLINE=1 would make every Hub call fail anyway
    cache = Path(cache_dir or constants.HF_HUB_CACHE).expanduser()
    what = f"{repo_id}@{revision}" if revision else repo_id
    if not offline:
        # List first, so that a missing repo, a bad revision or a full disk is reported before any byte is fetched.
        with _hub_errors(repo_id, revision, token=token, offline=False):
            info = HfApi().model_info(repo_id, revision=revision, files_metadata=True, token=token)
        missing = _missing_bytes(info, cache / _repo_folder(repo_id))
        _check_free_space(missing, cache, what)
        progress.say(f"    fetching {what} from the Hugging Face Hub ({missing / GIB:.2f} GiB to download)")
    with _hub_errors(repo_id, revision, token=token, offline=offline):
        local = snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=str(cache),
            token=token,
            allow_patterns=list(HUB_PATTERNS),
            local_files_only=offline,
            tqdm_class=None if progress.enabled() else _silent_tqdm(),
        )
    return Path(local)


def _wanted(filename: str) -> bool:
    """Whether a build needs this repository file (the same matching snapshot_download's allow_patterns does)."""
    return any(fnmatch.fnmatchcase(filename, pattern) for pattern in HUB_PATTERNS)


def _missing_bytes(info, storage: Path) -> int:
    """Bytes of the wanted files that the cache does not hold yet. The cache stores a file under
    snapshots/<commit>/<name>, linked to blobs/<etag>, where the etag is the LFS sha256 or else the git blob id."""
    missing = 0
    for sibling in info.siblings or []:
        if not _wanted(sibling.rfilename):
            continue
        etag = sibling.lfs.sha256 if sibling.lfs else sibling.blob_id
        if (storage / "snapshots" / str(info.sha) / sibling.rfilename).exists():
            continue
        if etag and (storage / "blobs" / etag).exists():
            continue
        missing += sibling.size or 0
    return missing


def _check_free_space(missing: int, cache: Path, what: str) -> None:
    if missing == 0:
        return
    probe = cache
    while not probe.exists():  # the cache folder is created by the download itself
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    needed = int(missing * (1 + SPACE_MARGIN_FRACTION)) + SPACE_MARGIN_BYTES
    if free < needed:
        raise ModelDownloadError(
            f"not enough disk space for {what}: {missing / GIB:.2f} GiB to download needs {needed / GIB:.2f} GiB "
            f"with a safety margin, and {probe} has {free / GIB:.2f} GiB free",
            hint="Free some space, or download elsewhere with --cache-dir DIR (or HF_HOME=DIR).",
        )


def _repo_folder(repo_id: str) -> str:
    from huggingface_hub.file_download import repo_folder_name

    return repo_folder_name(repo_id=repo_id, repo_type="model")


def _silent_tqdm():
    """A tqdm class that never draws, for when tritonrepo's progress output is switched off."""
    from tqdm.auto import tqdm

    class SilentTqdm(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return SilentTqdm


def _network_errors() -> tuple[type[BaseException], ...]:
    # The transport errors of whichever HTTP client this huggingface_hub uses (httpx2 from 2.x, httpx in 1.x): if it
    # raised, it is already imported.
    clients = [sys.modules.get(name) for name in ("httpx2", "httpx")]
    return (ConnectionError, TimeoutError, *(client.TransportError for client in clients if client is not None))


@contextlib.contextmanager
def _hub_errors(repo_id: str, revision: str | None, *, token: str | None, offline: bool) -> Iterator[None]:
    """Turn huggingface_hub's errors into ours: one line each, with what to do, and never the token."""
    from huggingface_hub import constants
    from huggingface_hub import errors as hub

    what = f"{repo_id}@{revision}" if revision else repo_id

    def detail(error: BaseException) -> str:
        line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        return line.replace(token, "***") if token else line

    unreachable_hint = (
        "Check the network, a proxy or HF_ENDPOINT; or use --offline with a model already in the cache, "
        "or pass a local checkpoint folder."
    )
    try:
        yield
    except hub.GatedRepoError:
        raise ModelDownloadError(
            f"{repo_id} is gated and {'this token has no access to it' if token else 'no token was given'}",
            hint=f"Accept its license on https://huggingface.co/{repo_id} and set HF_TOKEN to a token of that account.",
        ) from None
    except hub.RepositoryNotFoundError:
        raise ModelNotFoundError(
            f"{repo_id} was not found on the Hugging Face Hub",
            hint="Check the id, or set HF_TOKEN to a token with access if it is private.",
        ) from None
    except hub.RevisionNotFoundError:
        raise ModelNotFoundError(
            f"revision {revision!r} of {repo_id} does not exist", hint="Use a branch, tag or commit of the repository."
        ) from None
    except hub.HFValidationError as error:
        raise ModelNotFoundError(f"{repo_id!r} is not a valid Hugging Face id: {detail(error)}") from None
    except hub.LocalEntryNotFoundError as error:
        # snapshot_download's answer both offline and when the Hub failed between the listing and the files.
        incomplete = type(error).__name__ == "IncompleteSnapshotError"
        state = "only partly in the local cache" if incomplete else "not in the local cache"
        reason = "in offline mode" if offline else f"({detail(error.__cause__ or error)})"
        hint = "Run without --offline (and HF_HUB_OFFLINE) to download it, or pass a local checkpoint folder."
        raise ModelDownloadError(
            f"{what} is {state} and the Hub cannot be reached {reason}", hint=hint if offline else unreachable_hint
        ) from None
    except _network_errors() as error:
        raise ModelDownloadError(
            f"the Hugging Face Hub cannot be reached at {constants.ENDPOINT} ({detail(error)})", hint=unreachable_hint
        ) from None
    except hub.HfHubHTTPError as error:
        raise ModelDownloadError(f"downloading {what} failed: {detail(error)}") from None
    except OSError as error:  # disk full, permissions
        raise ModelDownloadError(
            f"downloading {what} failed: {error.strerror or detail(error)}",
            hint="Check free space and permissions of the cache, or use --cache-dir DIR (or HF_HOME=DIR).",
        ) from None
