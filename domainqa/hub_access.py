"""Reaching the Hugging Face Hub for a model, adapter or data set named by its id (`user/name`, for an
adapter `user/name@revision`): which commit the id names now, and the one line to stop with when the Hub
cannot say.

huggingface_hub retries a file look-up that meets a network error five times (about 25 s a file) before
it reports that nothing is cached, and loading one model asks for several files: without a network a Hub id
stalled a script for minutes before its traceback. Here one request, without retries and within
HF_HUB_ETAG_TIMEOUT seconds (the client's own setting for metadata requests, 10 by default), asks for the
repo's commit first; when it fails the script stops in one line. With HF_HUB_OFFLINE=1 nothing is asked of
the network: the commit comes from the local cache, as the client itself resolves it (`refs/<revision>`).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .checks import looks_like_path
from .config import UsageError
from .redaction import Redactor

LOCAL_PATH = "give a local path"


def advice(local_hint: str = LOCAL_PATH) -> str:
    """What to do when the Hub cannot be reached; `local_hint` names the local file that would do instead."""
    return f"set HF_HUB_OFFLINE=1 to use the local cache, {local_hint}, or check the network"


# user/name, then @revision (a branch, tag, commit or refs/pr/N); data.py adds :split for data sets.
REPO_REVISION = r"(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+?)(?:@(?P<revision>[\w./-]+?))?"
# Models may also go by a bare name (gpt2), as transformers accepts.
_MODEL_REF = r"(?P<repo>(?:[A-Za-z0-9][\w.-]*/)?[\w.-]+?)(?:@(?P<revision>[\w./-]+?))?"


class HubError(UsageError):
    """A Hub id that cannot be used now: the Hub cannot be reached, or has no such repo or revision."""


class HubUnreachable(HubError):
    """No answer from the Hub: no network, a closed or blocked endpoint, or a timeout."""


@dataclass(frozen=True)
class HubRef:
    repo_id: str
    revision: str | None = None

    def __str__(self) -> str:
        return self.repo_id + (f"@{self.revision}" if self.revision else "")


def parse_hub_ref(value: str) -> HubRef | None:
    """The Hub model repo that `value` names, or None where it is, or can only be, a local path."""
    match = re.fullmatch(_MODEL_REF, value)
    if match is None or Path(value).exists() or looks_like_path(value):
        return None
    return HubRef(match["repo"], match["revision"])


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:200]}" if lines else type(error).__name__


def _offline() -> bool:
    from huggingface_hub import constants

    return constants.is_offline_mode()


def _endpoint() -> str:
    from huggingface_hub import constants

    return Redactor()(constants.ENDPOINT)  # an endpoint may carry credentials


def _cached_commit(ref: HubRef, repo_type: str) -> str:
    """The commit the cache recorded for the revision when it was last fetched online."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RevisionResolutionError

    api = HfApi()
    try:
        return api.resolve_revision(
            ref.repo_id, repo_type=repo_type, revision=ref.revision, local_files_only=True
        ).resolved
    except RevisionResolutionError:
        raise HubError(
            f"{ref}: not in the local Hub cache, and HF_HUB_OFFLINE=1 keeps the Hub out of reach; fetch it once"
            " online (unset HF_HUB_OFFLINE) or give a local path"
        ) from None


def _asked_commit(ref: HubRef, repo_type: str, local_hint: str) -> str:
    """The commit the Hub says the revision names, in one request without retries."""
    import httpx2
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    kind = "data set" if repo_type == "dataset" else repo_type
    try:
        info = HfApi().repo_info(
            ref.repo_id, repo_type=repo_type, revision=ref.revision, timeout=constants.HF_HUB_ETAG_TIMEOUT
        )
    except (httpx2.TransportError, OfflineModeIsEnabled) as e:
        raise HubUnreachable(
            f"{ref}: cannot reach the Hub at {_endpoint()} ({_first_line(e)}); {advice(local_hint)}"
        ) from None
    except RevisionNotFoundError:
        raise HubError(f"{ref}: the Hub {kind} {ref.repo_id} has no revision {ref.revision}") from None
    except GatedRepoError:
        raise HubError(f"{ref}: a gated Hub {kind}; ask for access on the Hub, then log in (hf auth login)") from None
    except RepositoryNotFoundError:
        raise HubError(
            f"{ref}: no such local path, nor a Hub {kind} (a private one needs a login: hf auth login or $HF_TOKEN)"
        ) from None
    except HfHubHTTPError as e:
        raise HubError(f"{ref}: the Hub at {_endpoint()} answered {_first_line(e)}; {advice()}") from None
    return str(info.sha)


@functools.cache
def hub_commit(repo_id: str, revision: str | None = None, repo_type: str = "model", local_hint: str = "") -> str:
    """The commit `repo_id@revision` names now: asked of the Hub, or with HF_HUB_OFFLINE=1 read from the
    local cache. HubError (one line) when it cannot be known; `local_hint` says which local file would do
    instead (default: "give a local path"). Asked once per process."""
    ref = HubRef(repo_id, revision)
    if _offline():
        return _cached_commit(ref, repo_type)
    return _asked_commit(ref, repo_type, local_hint or LOCAL_PATH)


def check_hub_dataset(repo_id: str, revision: str | None = None, local_hint: str = "") -> None:
    """Stop in one line now (HubUnreachable), rather than after the client's retries, when the Hub does not
    answer for a data set. Whether the repo, revision and split exist the loader says itself, in the words of
    its other errors. Offline nothing is checked: `datasets` reads data sets from a cache of its own."""
    if _offline():
        return
    try:
        hub_commit(repo_id, revision, "dataset", local_hint)
    except HubUnreachable:
        raise
    except HubError:
        pass


def hub_model_commit(name_or_path: str) -> str | None:
    """The commit a base model's Hub id names (checked before any loader asks the Hub); None for a local path."""
    ref = parse_hub_ref(name_or_path)
    if ref is None:
        return None
    if ref.revision:
        raise HubError(f"{ref}: a revision (@...) is read for --adapter_path and --train_data, not for a base model")
    return hub_commit(ref.repo_id)


def check_can_push(repo_id: str, token: str | None = None) -> None:
    """Before any work is done for a release: uploading needs the Hub online, a token, and an answer from the
    Hub. One line otherwise, where a failed push would come only after training."""
    import httpx2
    from huggingface_hub import HfApi, constants, get_token
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    later = "or release the run later with python -m domainqa.hub_upload"
    if _offline():
        raise HubError(f"--push_to_hub with HF_HUB_OFFLINE=1: nothing can be uploaded; unset it, {later}")
    token = token or get_token()  # --hub_token, else $HF_TOKEN or the stored login
    if not token:
        raise HubError(f"--push_to_hub needs a Hub token: --hub_token, $HF_TOKEN or hf auth login; {later}")
    try:
        HfApi(token=token).repo_info(repo_id, timeout=constants.HF_HUB_ETAG_TIMEOUT)
    except httpx2.TransportError as e:
        raise HubUnreachable(
            f"--push_to_hub: cannot reach the Hub at {_endpoint()} ({_first_line(e)}); {later}"
        ) from None
    except RepositoryNotFoundError:
        pass  # the release creates it
    except HfHubHTTPError as e:
        raise HubError(f"--push_to_hub: the Hub at {_endpoint()} answered {_first_line(e)}; {later}") from None


@dataclass(frozen=True)
class ModelSource:
    folder: str  # a local folder holding the model or adapter
    commit: str | None = None  # the Hub commit its files come from; None for a folder given as such


def model_folder(value: str, patterns: Sequence[str]) -> ModelSource:
    """A model or adapter as a local folder: `value` where it is one, else the files of the Hub repo
    `user/name[@revision]` that match `patterns`, at the commit the revision names now (downloaded into the
    Hub cache once; with HF_HUB_OFFLINE=1 taken from it). Every loader then reads that one commit, whose
    hash is the name of the snapshot folder."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    ref = parse_hub_ref(value)
    if ref is None:
        return ModelSource(value)
    hub_commit(ref.repo_id, ref.revision)  # one line now if the Hub (or, offline, the cache) cannot answer
    try:
        # By its revision, not the commit just asked: the client then records revision -> commit in the
        # cache, which is where an offline run finds it later.
        folder = snapshot_download(ref.repo_id, revision=ref.revision, allow_patterns=list(patterns))
    except (LocalEntryNotFoundError, HfHubHTTPError) as e:  # a snapshot cut off, or the network lost midway
        raise HubError(f"{ref}: cannot fetch its files ({_first_line(e)}); {advice()}") from None
    return ModelSource(folder, Path(folder).name)
