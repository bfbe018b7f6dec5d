"""Every change this app makes to MONAI Label's server beyond the hooks MONAI Label offers, and why.

- MONAI Label 0.8.5 builds its FastAPI application (``monailabel.app.app``) before the app is
  loaded, and gives an app no hook to add routes or exception handlers to it (:func:`add_routes`).
- Its ``/infer`` endpoint saves an uploaded image to a temporary file and hands the app only that
  file's path, exactly as it hands on a path a client typed (``run_inference`` in
  monailabel/endpoints/infer.py); :func:`record_uploads` keeps the names of the files it made, so the
  app can read uploads and refuse other paths (:func:`take_upload`).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile

from universal.errors import UniversalError

from .endpoints import class_router, library_error, malformed_json

log = logging.getLogger(__name__)


def add_routes(fastapi_app, current_state) -> None:
    """Add ``/universal/...`` and the error answers to the running server, once per process.

    Starlette builds its middleware stack, exception handlers included, on the first request and
    keeps it (``Starlette.__call__`` in starlette/applications.py); dropping it makes the next request
    build it again with the handlers added here.
    """
    if getattr(fastapi_app.state, "universal_routes", False):
        return
    fastapi_app.include_router(class_router(current_state))
    fastapi_app.add_exception_handler(json.JSONDecodeError, malformed_json)
    fastapi_app.add_exception_handler(UniversalError, library_error)
    fastapi_app.middleware_stack = None
    fastapi_app.state.universal_routes = True
    log.info("routes added: GET/POST /universal/classes, GET /universal/versions")


_uploads: set[str] = set()


class _RecordingTempfile:
    """The ``tempfile`` module as monailabel.endpoints.infer sees it, remembering the names of the
    temporary files it makes for uploads."""

    def __getattr__(self, name):
        return getattr(tempfile, name)

    def NamedTemporaryFile(self, *args, **kwargs):
        made = tempfile.NamedTemporaryFile(*args, **kwargs)  # noqa: SIM115 - the endpoint uses only its name
        _uploads.add(os.path.realpath(made.name))
        return made


def record_uploads() -> None:
    """Make MONAI Label's infer endpoint record the files it saves uploads to (once per process)."""
    import monailabel.endpoints.infer as endpoint

    if not isinstance(endpoint.tempfile, _RecordingTempfile):
        endpoint.tempfile = _RecordingTempfile()


def take_upload(path: str) -> bool:
    """Whether ``path`` is a file MONAI Label saved an upload to (forgotten once asked: the endpoint
    removes the file after its request)."""
    real = os.path.realpath(path)
    if real in _uploads:
        _uploads.discard(real)
        return True
    return False
