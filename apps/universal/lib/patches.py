"""Every change this app makes to MONAI Label's server beyond the hooks MONAI Label offers, and why.

MONAI Label 0.8.5 builds its FastAPI application (``monailabel.app.app``) before the app is loaded,
and gives an app no hook to add routes or exception handlers to it.
"""

from __future__ import annotations

import json
import logging

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
