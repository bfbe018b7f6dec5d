"""Atomic file writes (a reader sees the old file or the new one, never half of one), and file digests."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from universal.errors import DiskFullError, UniversalError

FULL_DISK = (errno.ENOSPC, errno.EDQUOT)


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = ".part") -> Iterator[Path]:
    """A temporary file name beside ``path`` (ending in ``suffix``, for writers that choose the format
    by it); on success the file written there replaces ``path`` in one step.

    On error the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(handle)
    try:
        yield Path(temporary)
        os.chmod(temporary, path.stat().st_mode & 0o777 if path.exists() else 0o644)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success it replaces ``path`` in one step (see
    :func:`atomic_path`)."""
    with atomic_path(path) as temporary, open(temporary, mode) as stream:
        yield stream
        stream.flush()
        os.fsync(stream.fileno())


def check_nifti_path(path: str | Path) -> Path:
    """``path`` as a Path if its name ends in ``.nii`` or ``.nii.gz``; else a :class:`UniversalError`."""
    path = Path(path)
    if not path.name.endswith((".nii", ".nii.gz")):
        raise UniversalError(f"NIfTI files end in .nii or .nii.gz; got {path}")
    return path


@contextlib.contextmanager
def full_disk_as_error(what: str) -> Iterator[None]:
    """An error of a full disk (or quota) inside the block, an OSError or one raised from it, as a
    :class:`DiskFullError` that says ``what`` could not be written and that nothing changed; other
    errors pass as they are."""
    try:
        yield
    except Exception as error:
        full = next((e for e in _chain(error) if isinstance(e, OSError) and e.errno in FULL_DISK), None)
        if full is None:
            raise
        raise DiskFullError(f"{what}: the disk is full ({full.strerror}); nothing was changed. Free some space "
                            "and try again") from error


def _chain(error: BaseException) -> Iterator[BaseException]:
    """``error`` and the errors it was raised from or while handling (a writer may wrap an OSError,
    as torch.save does in a RuntimeError)."""
    while error is not None:
        yield error
        error = error.__cause__ or error.__context__


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w") as stream:
        stream.write(text)


def sha256_of(path: str | Path, block: int = 1 << 20) -> str:
    """The SHA-256 of a file's content, as 64 hex digits."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(block):
            digest.update(chunk)
    return digest.hexdigest()
