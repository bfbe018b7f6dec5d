"""The app's own routes (``/universal/...``) and answers to malformed request bodies and to library
errors that no task turned into an answer (installed by :func:`lib.patches.add_routes`)."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import JSONResponse
from monailabel.config import settings
from monailabel.endpoints.user.auth import RBAC

from universal.errors import CatalogError, DuplicateClassError, UniversalError
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
        name = body.get("name")
        if not isinstance(name, str) or not name.strip():
            raise http_error(422, "a new class needs a 'name', e.g. {\"name\": \"Appendix\"}")
        embedding = body.get("embedding")
        if embedding is not None and (not isinstance(embedding, list) or len(embedding) != EMBEDDING_DIM
                                      or not all(isinstance(v, int | float) for v in embedding)):
            raise http_error(422, f"'embedding' must be a list of {EMBEDDING_DIM} numbers (a CLIP ViT-B/32 text "
                                  "embedding); leave it out to embed the prompt")
        try:
            info = state.add_class(name.strip(), body.get("prompt") or None, embedding,
                                   kind=str(body.get("kind") or "organ"), parents=body.get("parents") or (),
                                   synonyms=body.get("synonyms") or ())
        except ModelNotReady as error:
            raise http_error(503, f"cannot add a class: {error}") from error
        except DuplicateClassError as error:
            raise http_error(409, str(error)) from error
        except CatalogError as error:
            raise http_error(422, str(error)) from error
        except (UniversalError, ValueError) as error:
            raise http_error(422, f"cannot add class '{name}': {error}") from error
        return {"class": info.to_record(), "labels": state.catalog().label_map(), "version": state.version()}

    @router.get("/versions", summary="Published models; restore one with --conf restore VERSION", dependencies=user)
    def versions():
        state: AppState = current_state()
        return state.store.index()

    return router


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


async def library_error(request: Request, error: UniversalError) -> JSONResponse:
    """422 (503 when the model is not ready) for a library error no task turned into an answer."""
    return JSONResponse(status_code=503 if isinstance(error, ModelNotReady) else 422, content={"detail": str(error)})
