"""Every change this app makes to MONAI Label's server beyond the hooks MONAI Label offers, and every
private name of MONAI Label (0.8.5, pinned) the app relies on; :data:`INTERNALS` lists the names, and a
test fails naming any that an upgrade removes.

Changes made here:

- MONAI Label 0.8.5 builds its FastAPI application (``monailabel.app.app``) before the app is
  loaded, and gives an app no hook to add routes or exception handlers to it (:func:`add_routes`,
  which also drops Starlette's built ``middleware_stack`` so that it is built again with them).
- It reads request bodies of any size (uploads are copied whole to disk, ``shutil.copyfileobj`` in
  monailabel/endpoints/infer.py and datastore.py); :class:`UploadLimit` bounds them.
- Its token check (``from_token`` in monailabel/endpoints/user/auth.py) calls ``jwt.decode`` without
  ``algorithms``, which PyJWT 2 requires (jpadilla/pyjwt CHANGELOG.rst, v2.0.0: "Require explicit
  algorithms in jwt.decode() by default"), so with ``MONAI_LABEL_AUTH_ENABLE`` every token, valid or
  not, is a 401; :func:`check_tokens` replaces the module's ``jwt`` with one that passes the
  algorithms the realm's RSA key can verify.
- Its ``/infer`` and datastore endpoints save an upload to a temporary file and remove it in a
  background task that runs only when the request succeeds (``run_inference`` in
  monailabel/endpoints/infer.py, ``add_image`` and ``save_label`` in monailabel/endpoints/datastore.py),
  so every refused upload stayed on disk; and ``/infer`` hands the app only that file's path,
  exactly as it hands on a path a client typed. :func:`record_uploads` replaces those modules'
  ``tempfile`` so that the files a request made are known: :class:`RemoveUploads` removes them when
  the request ends, whatever the answer, and the app reads uploads and refuses other paths
  (:func:`take_upload`).
- Its endpoints read the token's user for their own checks only (``RBAC`` in
  monailabel/endpoints/user/auth.py) and do not hand it to the app's datastore or infer task (a label's
  saver is logged, not passed); :class:`RequestUser` keeps the token's user name claim
  (``MONAI_LABEL_AUTH_TOKEN_USERNAME``) for the request (:func:`lib.identity.request_user`), so labels and served
  predictions are attributed to their annotator. The token is verified by ``RBAC`` on the same request.
- Its ``POST /train/...`` and ``POST /batch/infer/...`` start a process without asking the app, so a
  task that can only fail answered 200; :class:`TaskRequests` answers 409 at once when a training
  could publish nothing (a read-only model folder), and 422 for a parameter the task would refuse.

Private parts used elsewhere in the app:

- ``lib/datastore.py`` (:class:`CheckedDatastore`) saves labels as ``LocalDatastore.save_label`` does,
  with its file name (``_to_id``, ``_filename``), index (``_datastore``: ``objects``, ``label_path``,
  ``model_dump``; ``_datastore_config_path``) and lock (``_lock_file``), writes the index itself
  (overrides ``_update_datastore_file``, setting ``_ignore_event_config`` and ``_config_ts`` as it
  does), hands watchdog's "moved" events (``_handler``) to ``_on_modify_event`` and ``_on_any_event``,
  and names its folder (``_datastore_path``) for the export.
- ``lib/pacs.py`` (:class:`PacsDatastore`) reads ``DICOMWebDatastore``'s ``_client``,
  ``_search_filter`` and ``_datastore`` (``image_path``, ``label_path``), and for labels other than
  ``final`` calls ``LocalDatastore``'s methods past ``DICOMWebDatastore``'s
  (``super(DICOMWebDatastore, self)``), which would read the image id as a SEG series.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import tempfile

import jwt
from starlette.responses import JSONResponse

from universal.errors import UniversalError

from .delivery import delivery_router
from .endpoints import class_router, error_status, library_error, malformed_json, nested_too_deep
from .identity import reset_request_user, set_request_user
from .team import team_router

log = logging.getLogger(__name__)

# Private names of MONAI Label the app relies on (see the module docstring): where they live, and
# the names, dotted for an attribute of an attribute; instance attributes are looked for on an
# instance.
INTERNALS = {
    "monailabel.app": ("app",),
    "monailabel.endpoints.infer": ("tempfile",),
    "monailabel.endpoints.datastore": ("tempfile",),
    "monailabel.endpoints.user.auth": ("jwt",),
    "monailabel.datastore.local.LocalDatastore": (
        "_to_id", "_filename", "_datastore.objects", "_datastore.label_path", "_datastore.image_path",
        "_datastore.model_dump", "_datastore_config_path", "_lock_file", "_update_datastore_file",
        "_ignore_event_config", "_config_ts", "_handler", "_on_modify_event", "_on_any_event", "_datastore_path"),
    "monailabel.datastore.dicom.DICOMWebDatastore": ("_client", "_search_filter", "_datastore.image_path",
                                                     "_datastore.label_path"),
}


def add_routes(fastapi_app, current_state, max_upload_bytes: int, check_task, current_datastore) -> None:
    """Add ``/universal/...`` (the classes' and the team's routes), the error answers, the upload limit
    (:class:`UploadLimit`), the removal of uploads (:class:`RemoveUploads`), the request's user
    (:class:`RequestUser`) and the check of task requests (:class:`TaskRequests`, ``check_task(task,
    params)``) to the running server, once per process.

    Starlette builds its middleware stack, exception handlers included, on the first request and
    keeps it (``Starlette.__call__`` in starlette/applications.py); dropping it makes the next request
    build it again with the handlers added here.
    """
    if getattr(fastapi_app.state, "universal_routes", False):
        return
    fastapi_app.include_router(class_router(current_state))
    fastapi_app.include_router(team_router(current_state, current_datastore))
    fastapi_app.include_router(delivery_router(current_state, current_datastore))
    fastapi_app.add_exception_handler(json.JSONDecodeError, malformed_json)
    fastapi_app.add_exception_handler(RecursionError, nested_too_deep)
    fastapi_app.add_exception_handler(UniversalError, library_error)
    fastapi_app.middleware_stack = None
    fastapi_app.add_middleware(TaskRequests, check=check_task)  # the last added runs first:
    fastapi_app.add_middleware(RemoveUploads)
    fastapi_app.add_middleware(RequestUser)
    fastapi_app.add_middleware(UploadLimit, limit=max_upload_bytes)  # the limit before any body is read
    fastapi_app.state.universal_routes = True
    log.info("routes added: /universal/classes, /universal/versions, /universal/labels, /universal/agreement, "
             "/universal/review, /universal/consensus, /universal/effort, /universal/export, /universal/dashboard")


class UploadLimit:
    """ASGI middleware: a request body over ``limit`` bytes is answered 413 without being stored, by
    its Content-Length before any of it is read, or as it arrives when it declares none."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(scope, receive, send)
        received, exceeded, started = 0, False, False

        async def counted():
            nonlocal received, exceeded
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                exceeded = True
                raise _TooLarge
            return message

        async def watched(message):
            nonlocal started
            if exceeded:
                return  # the app's answer to a body cut short is replaced by the 413
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope, receive, send):
        megabytes = self.limit / 2**20
        answer = JSONResponse(status_code=413, content={
            "detail": f"the request is larger than the server accepts ({megabytes:g} MB); send a smaller file, "
                      "or start the server with a larger --conf max_upload_mb"})
        await answer(scope, receive, send)


class _TooLarge(Exception):
    """A request body went past the limit while it was read."""


# The realm's key is RSA: monailabel's get_public_key reads the "public_key" of the realm's JSON
# (Keycloak's realm endpoint) and wraps it as a PEM public key, which verifies RSA signatures only
TOKEN_ALGORITHMS = ["RS256", "RS384", "RS512"]


class _TokenDecoder:
    """PyJWT as monailabel.endpoints.user.auth sees it, decoding with :data:`TOKEN_ALGORITHMS`."""

    def __getattr__(self, name):
        return getattr(jwt, name)

    def decode(self, token, key, **kwargs):
        kwargs.setdefault("algorithms", TOKEN_ALGORITHMS)
        return jwt.decode(token, key, **kwargs)


def check_tokens() -> None:
    """Make MONAI Label's token check verify signed tokens under PyJWT 2 (once per process)."""
    import monailabel.endpoints.user.auth as auth

    if not isinstance(auth.jwt, _TokenDecoder):
        auth.jwt = _TokenDecoder()


_request_uploads: contextvars.ContextVar[set[str] | None] = contextvars.ContextVar("uploads", default=None)


class _RecordingTempfile:
    """The ``tempfile`` module as MONAI Label's endpoints see it, remembering the names of the
    temporary files it makes for the request being answered."""

    def __getattr__(self, name):
        return getattr(tempfile, name)

    def NamedTemporaryFile(self, *args, **kwargs):
        made = tempfile.NamedTemporaryFile(*args, **kwargs)  # noqa: SIM115 - the endpoints use only its name
        uploads = _request_uploads.get()
        if uploads is not None:
            uploads.add(os.path.realpath(made.name))
        return made


def record_uploads() -> None:
    """Make MONAI Label's infer and datastore endpoints record the files they save uploads to (once per
    process)."""
    import monailabel.endpoints.datastore as datastore
    import monailabel.endpoints.infer as infer

    for endpoint in (infer, datastore):
        if not isinstance(endpoint.tempfile, _RecordingTempfile):
            endpoint.tempfile = _RecordingTempfile()


def take_upload(path: str) -> bool:
    """Whether ``path`` is a file MONAI Label saved an upload of this request to."""
    uploads = _request_uploads.get()
    return uploads is not None and os.path.realpath(path) in uploads


class RemoveUploads:
    """ASGI middleware: the temporary files a request's uploads were saved to are removed when the
    request ends, whatever the answer (MONAI Label removes them after a success only)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        uploads: set[str] = set()
        token = _request_uploads.set(uploads)
        try:
            await self.app(scope, receive, send)
        finally:
            _request_uploads.reset(token)
            for path in uploads:
                with contextlib.suppress(OSError):
                    os.unlink(path)


class RequestUser:
    """ASGI middleware: the user name claim of the request's bearer token, for
    :func:`lib.identity.request_user`. Its
    signature is not checked here: MONAI Label's ``RBAC`` verifies the token on the same request, and
    refuses it before any endpoint runs."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        from monailabel.config import settings

        header = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
        name = None
        if settings.MONAI_LABEL_AUTH_ENABLE and header.lower().startswith("bearer "):
            with contextlib.suppress(jwt.InvalidTokenError):
                claims = jwt.decode(header[7:].strip(), options={"verify_signature": False})
                name = claims.get(settings.MONAI_LABEL_AUTH_TOKEN_USERNAME)
        token = set_request_user(str(name) if name else None)
        try:
            await self.app(scope, receive, send)
        finally:
            reset_request_user(token)


TASK_PATHS = (("/train/", "train"), ("/batch/infer/", "batch"))  # MONAI Label's task routes, and what they start


class TaskRequests:
    """ASGI middleware: ``POST /train/...`` and ``POST /batch/infer/...`` are answered at once when the
    task can only fail (``check(task, params)`` raises the library's error; task ``"train"`` or
    ``"batch"``), instead of starting a process; a body that is not a JSON object is left to MONAI
    Label's own answer."""

    def __init__(self, app, check):
        self.app, self.check = app, check

    async def __call__(self, scope, receive, send):
        task = next((task for path, task in TASK_PATHS if scope.get("path", "").startswith(path)), None)
        if not (scope["type"] == "http" and scope["method"] == "POST" and task):
            return await self.app(scope, receive, send)
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        try:
            params = json.loads(body or b"{}")
        except ValueError:
            params = None  # not JSON: MONAI Label's validation answers
        try:
            if isinstance(params, dict):
                self.check(task, params)
        except UniversalError as error:
            answer = JSONResponse(status_code=error_status(error), content={"detail": str(error)})
            return await answer(scope, receive, send)
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)
