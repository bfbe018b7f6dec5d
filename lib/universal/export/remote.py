"""An export from a running server: ``GET /universal/export`` answers a zip, streamed to disk and
unpacked into the output folder."""

from __future__ import annotations

import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

from universal.errors import UniversalError


def fetch_export(url: str, output: str | Path, *, token: str | None = None, **params) -> Path:
    """Ask the server at ``url`` for an export (``params``: the query of ``GET /universal/export``) and
    unpack it into ``output``; returns ``output``."""
    query = urllib.parse.urlencode({k: (",".join(v) if isinstance(v, list) else v) for k, v in params.items()
                                    if v is not None})
    request = urllib.request.Request(f"{url.rstrip('/')}/universal/export?{query}")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    output = Path(output)
    with tempfile.TemporaryFile() as archive:
        try:
            with urllib.request.urlopen(request, timeout=600) as answer:
                shutil.copyfileobj(answer, archive, 1 << 20)
        except urllib.error.HTTPError as error:
            raise UniversalError(f"the server answered {error.code}: {error.read().decode(errors='replace')[:300]}"
                                 ) from error
        except (urllib.error.URLError, OSError) as error:
            raise UniversalError(f"cannot reach {url}: {getattr(error, 'reason', error)}") from error
        archive.seek(0)
        with zipfile.ZipFile(archive) as unpacked:
            for member in unpacked.namelist():
                target = (output / member).resolve()
                if not target.is_relative_to(output.resolve()):
                    raise UniversalError(f"the export holds a path outside its folder ({member}); nothing unpacked")
            unpacked.extractall(output)
    return output
