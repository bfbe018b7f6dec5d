"""The app's own routes (``/universal/...``) and answers to malformed request bodies and to library
errors that no task turned into an answer (installed by :func:`lib.patches.add_routes`)."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import JSONResponse
from monailabel.config import settings
from monailabel.endpoints.user.auth import RBAC

from universal.catalog import DEFAULT_KIND, KINDS
from universal.errors import CatalogError, DiskFullError, DuplicateClassError, ReadOnlyError, UniversalError
from universal.nets.text import EMBEDDING_DIM

from .conf import http_error
from .state import AppState, ModelNotReady

NEW_CLASS_BODY = Annotated[dict, Body(examples=[{"name": "Appendix", "prompt": "A computerized tomography of a "
                                                                                 "Appendix"}])]


def class_router(current_state) -> APIRouter:
    """``GET /universal/classes`` (the catalogue), ``POST /universal/classes`` (add one by name and
    prompt) and ``GET /universal/versions`` (published models). ``current_state()`` returns the
    running app's :class:`AppState`. With MONAI Label's authentication on, reading needs its user
    role and adding a class its annotator role, as for reading and saving labels
    (monailabel/endpoints/datastore.py)."""
    router = APIRouter(prefix="/universal", tags=["Universal Model"])
    user = [Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER))]
    annotator = [Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ANNOTATOR))]

    @router.get("/classes", summary="The class catalogue of the model in use", dependencies=user)
    def list_classes():
        state: AppState = current_state()
        return {"classes": state.catalog().to_records(), "ready": state.ready}

    @router.post("/classes", summary="Add a class by name and prompt; /info and /infer show it at once",
                 dependencies=annotator)
    def add_class(body: NEW_CLASS_BODY):
        state: AppState = current_state()
        try:
            info = state.add_class(**new_class(body))
        except DuplicateClassError as error:
            raise http_error(409, str(error)) from error
        except CatalogError as error:
            raise http_error(422, str(error)) from error
        except UniversalError as error:
            raise http_error(error_status(error), f"cannot add the class: {error}") from error
        except ValueError as error:
            raise http_error(422, f"cannot add the class: {error}") from error
        return {"class": info.to_record(), "labels": state.catalog().label_map(), "version": state.version()}

    @router.get("/versions", summary="Published models; restore one with --conf restore VERSION", dependencies=user)
    def versions():
        state: AppState = current_state()
        return state.store.index()

    return router


def new_class(body: dict) -> dict:
    """The arguments of :meth:`AppState.add_class` from a ``POST /universal/classes`` body, each of the
    type it must have (the library checks the values); an HTTP 422 naming the field otherwise."""
    name, prompt, embedding = body.get("name"), body.get("prompt"), body.get("embedding")
    if not isinstance(name, str) or not name.strip():
        raise http_error(422, "a new class needs a 'name', e.g. {\"name\": \"Appendix\"}")
    if prompt is not None and (not isinstance(prompt, str) or not prompt.strip()):
        raise http_error(422, "'prompt' must be a text, e.g. \"A computerized tomography of a Appendix\"; leave it "
                              "out for the released template around the name")
    numbers = isinstance(embedding, list) and all(isinstance(v, int | float) and not isinstance(v, bool)
                                                  for v in embedding)
    if embedding is not None and (not numbers or len(embedding) != EMBEDDING_DIM):
        raise http_error(422, f"'embedding' must be a list of {EMBEDDING_DIM} numbers (a CLIP ViT-B/32 text "
                              "embedding); leave it out to embed the prompt")
    kind = body.get("kind") or DEFAULT_KIND
    if kind not in KINDS:
        raise http_error(422, f"'kind' must be one of {', '.join(KINDS)}, got {kind!r}")
    lists = {field: body.get(field) or [] for field in ("parents", "synonyms")}
    for field, values in lists.items():
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise http_error(422, f"'{field}' must be a list of names, e.g. [\"Liver\"], got {values!r}")
    return {"name": name.strip(), "prompt": prompt, "embedding": embedding, "kind": kind, **lists}


async def malformed_json(request: Request, error: json.JSONDecodeError) -> JSONResponse:
    """400 for a ``params`` field (or body) that is not JSON."""
    return JSONResponse(status_code=400, content={
        "detail": f"the request's params are not valid JSON ({error.msg} at character {error.pos}); "
                  "send a JSON object, e.g. params={\"threshold\": 0.5}"})


async def nested_too_deep(request: Request, error: RecursionError) -> JSONResponse:
    """400 for JSON nested too deeply for Python's parser (``json.loads`` recurses per level)."""
    return JSONResponse(status_code=400, content={
        "detail": "the request's params nest too deeply to be read; send a flat JSON object, e.g. "
                  "params={\"threshold\": 0.5}"})


def error_status(error: UniversalError) -> int:
    """The HTTP status of a library error: 503 while the model is not ready, 507 for a full disk, 409 for
    a change asked of a read-only folder, 422 for anything else the request asked."""
    kinds = ((ModelNotReady, 503), (DiskFullError, 507), (ReadOnlyError, 409))
    return next((status for kind, status in kinds if isinstance(error, kind)), 422)


async def library_error(request: Request, error: UniversalError) -> JSONResponse:
    """The library's error as an answer (:func:`error_status`), for errors no task turned into one."""
    return JSONResponse(status_code=error_status(error), content={"detail": str(error)})
