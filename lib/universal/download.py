"""Files the library can fetch (weights, embeddings): local overrides first, then the cache, then a
verified download.

Resolution order for a :class:`RemoteFile`: an explicit path, the file named by its environment
variable, ``<cache>/<filename>``, and last a download into the cache that is checked against its
SHA-256 before it is kept: the pinned one, else the one the server publishes (Hugging Face sends a
large file's SHA-256 as ``X-Linked-Etag``), else the computed digest is logged for the user to pin.
``UNIVERSAL_OFFLINE=1`` forbids downloads.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from .errors import WeightsUnavailableError
from .io_utils import atomic_open

log = logging.getLogger(__name__)

CACHE_ENV = "UNIVERSAL_CACHE_DIR"
OFFLINE_ENV = "UNIVERSAL_OFFLINE"
RELEASE_LICENCE = "CC BY-NC-ND 4.0, © The Johns Hopkins University (non-commercial use only)"


def cache_dir() -> Path:
    """``$UNIVERSAL_CACHE_DIR``, else ``$XDG_CACHE_HOME/universal``, else ``~/.cache/universal``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "universal"


def offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").lower() in ("1", "true", "yes")


@dataclass(frozen=True)
class RemoteFile:
    """A file published at ``url``; ``sha256`` verifies downloads, ``env`` names a local override."""

    description: str
    url: str
    filename: str
    sha256: str | None = None
    env: str | None = None
    licence: str | None = None


def sha256_of(path: str | Path, block: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def resolve(remote: RemoteFile, path: str | Path | None = None, *, progress: bool = True) -> Path:
    """The local path of ``remote``, downloading it into the cache when it is nowhere on disk."""
    for origin, candidate in (("given", path), (f"${remote.env}", os.environ.get(remote.env or ""))):
        if candidate:
            candidate = Path(candidate).expanduser()
            if not candidate.is_file():
                raise WeightsUnavailableError(f"{remote.description}: {origin} file {candidate} does not exist")
            return candidate
    cached = cache_dir() / remote.filename
    if cached.is_file():
        return cached
    how = f"download {remote.url} to {cached}" + (f" or set {remote.env}=PATH" if remote.env else "")
    if offline():
        raise WeightsUnavailableError(
            f"{remote.description} not found at {cached} and downloads are off ({OFFLINE_ENV}); {how}"
        )
    try:
        return download(remote, cached, progress=progress)
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise WeightsUnavailableError(
            f"{remote.description} not found at {cached} and the download failed ({reason}); {how}"
        ) from error


def download(remote: RemoteFile, destination: Path, *, progress: bool = True, timeout: float = 30) -> Path:
    """Stream ``remote.url`` into ``destination`` atomically, keeping it only if its SHA-256 checks."""
    log.info("downloading %s from %s%s", remote.description, remote.url,
             f" (licence: {remote.licence})" if remote.licence else "")
    digest = hashlib.sha256()
    redirects = _RecordingRedirects()
    request = urllib.request.Request(remote.url, headers={"User-Agent": "universal-model"})
    opener = urllib.request.build_opener(redirects)
    with opener.open(request, timeout=timeout) as response, atomic_open(destination) as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=remote.filename, disable=not progress) as bar:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
                bar.update(len(chunk))
        expected = remote.sha256 or redirects.published or published_sha256(response.headers)
        if expected and digest.hexdigest() != expected:
            raise WeightsUnavailableError(
                f"{remote.description} from {remote.url} has SHA-256 {digest.hexdigest()}, expected "
                f"{expected}; the file was not kept. Retry, or place a verified copy at {destination}"
            )
        if not expected:
            log.warning("%s: no published checksum; SHA-256 of the download is %s", remote.description,
                        digest.hexdigest())
    return destination


def published_sha256(headers) -> str | None:
    """The SHA-256 a server publishes for a large file (``X-Linked-Etag``, as Hugging Face does)."""
    value = (headers.get("X-Linked-Etag") or "").strip().removeprefix("W/").strip('"').lower()
    return value if re.fullmatch(r"[0-9a-f]{64}", value) else None


class _RecordingRedirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects, remembering a SHA-256 published before the redirect to a CDN."""

    published: str | None = None

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        self.published = self.published or published_sha256(headers)
        return super().redirect_request(req, fp, code, msg, headers, newurl)
