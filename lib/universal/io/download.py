"""Files the library can fetch (weights, embeddings): local overrides first, then the cache, then a
verified download.

Resolution order for a :class:`RemoteFile`: an explicit path, the file named by its environment
variable, ``<cache>/<filename>``, and last a download into the cache that is kept only when its
SHA-256 matches the pinned one or, for a file without a pin, the one the server publishes (Hugging
Face sends a large file's SHA-256 as ``X-Linked-Etag`` on the redirect to its CDN). A download that
is cut short, or that no digest can verify, is not kept. ``UNIVERSAL_OFFLINE=1`` forbids downloads.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from universal.errors import WeightsUnavailableError
from universal.io.atomic import atomic_open

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
    """A file published at ``url``; ``sha256`` verifies downloads, ``env`` names a local override and
    ``mirror_env`` a variable whose URL (a mirror of the host) replaces the scheme and host of ``url``."""

    description: str
    url: str
    filename: str
    sha256: str | None = None
    env: str | None = None
    licence: str | None = None
    mirror_env: str | None = None

    @property
    def source_url(self) -> str:
        """``url``, on the mirror named by ``mirror_env`` when that variable is set."""
        mirror = os.environ.get(self.mirror_env or "", "").rstrip("/")
        if not mirror:
            return self.url
        parts = urllib.parse.urlsplit(self.url)
        return mirror + urllib.parse.urlunsplit(("", "", parts.path, parts.query, ""))


def resolve(remote: RemoteFile, path: str | Path | None = None, *, progress: bool = True, download: bool = True
            ) -> Path:
    """The local path of ``remote``, downloading it into the cache when it is nowhere on disk (unless
    ``download`` is false or downloads are off)."""
    for origin, candidate in (("given", path), (f"${remote.env}", os.environ.get(remote.env or ""))):
        if candidate:
            candidate = Path(candidate).expanduser()
            if not candidate.is_file():
                raise WeightsUnavailableError(f"{remote.description}: {origin} file {candidate} does not exist")
            return candidate
    cached = cache_dir() / remote.filename
    if cached.is_file():
        return cached
    how = f"download {remote.source_url} to {cached}" + (f" or set {remote.env}=PATH" if remote.env else "")
    if offline() or not download:
        why = f"downloads are off ({OFFLINE_ENV})" if offline() else "it is not downloaded here"
        raise WeightsUnavailableError(f"{remote.description} not found at {cached} and {why}; {how}")
    try:
        return fetch(remote, cached, progress=progress)
    except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
        reason = getattr(error, "reason", None) or error
        raise WeightsUnavailableError(
            f"{remote.description} not found at {cached} and the download failed ({reason}); {how}"
        ) from error


def fetch(remote: RemoteFile, destination: Path, *, progress: bool = True, timeout: float = 30) -> Path:
    """Stream the file (from its mirror, if one is set) into ``destination`` atomically, keeping it
    only if it arrived whole and its SHA-256 matches the pinned or published digest."""
    url = remote.source_url
    log.info("downloading %s from %s%s", remote.description, url,
             f" (licence: {remote.licence})" if remote.licence else "")
    digest, received = hashlib.sha256(), 0
    redirects = _RecordingRedirects()
    request = urllib.request.Request(url, headers={"User-Agent": "universal-model"})
    opener = urllib.request.build_opener(redirects)
    with opener.open(request, timeout=timeout) as response, atomic_open(destination) as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=remote.filename, disable=not progress) as bar:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
        refused = f"; the file was not kept. Retry, or place a verified copy at {destination}"
        if total is not None and received != total:
            raise WeightsUnavailableError(
                f"{remote.description} from {url} was cut short ({received} of {total} bytes){refused}"
            )
        expected = remote.sha256 or redirects.published or published_sha256(response.headers)
        if not expected:
            raise WeightsUnavailableError(
                f"{remote.description} from {url} has no pinned or published SHA-256 to verify it "
                f"(the download's is {digest.hexdigest()}){refused}"
            )
        if digest.hexdigest() != expected:
            raise WeightsUnavailableError(
                f"{remote.description} from {url} has SHA-256 {digest.hexdigest()}, expected {expected}{refused}"
            )
    return destination


def published_sha256(headers) -> str | None:
    """The SHA-256 a server publishes for a large file: Hugging Face's ``X-Linked-Etag`` (the header
    huggingface/huggingface_hub reads in src/huggingface_hub/file_download.py, named in its
    constants.py; for a file stored in LFS its value is the file's SHA-256, as the test of
    huggingface/huggingface.js packages/hub/src/lib/file-download-info.spec.ts shows), quoted and
    possibly weak (``W/"…"``)."""
    value = (headers.get("X-Linked-Etag") or "").strip().removeprefix("W/").strip('"').lower()
    return value if re.fullmatch(r"[0-9a-f]{64}", value) else None


class _RecordingRedirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects, remembering a SHA-256 published before the redirect to a CDN."""

    published: str | None = None

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        self.published = self.published or published_sha256(headers)
        return super().redirect_request(req, fp, code, msg, headers, newurl)
