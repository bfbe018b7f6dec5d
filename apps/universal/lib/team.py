"""The team's routes (``/universal/labels``, ``/universal/agreement``, ``/universal/review``,
``/universal/consensus``, ``/universal/effort``) over the label history
(:class:`universal.serving.label_versions.LabelVersions`), and who an annotator is.

Roles, with MONAI Label's authentication on: reading needs its user role; reviewing, making a
version or a consensus the accepted label needs its reviewer role (or admin). Without
authentication anyone may do everything, as in MONAI Label.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Body, Depends
from fastapi.responses import FileResponse
from monailabel.config import settings
from monailabel.endpoints.user.auth import RBAC, User
from starlette.background import BackgroundTask

from universal.io.labels import write_label_file
from universal.io.names import plain_name
from universal.serving.agreement import CONSENSUS_METHODS
from universal.serving.review import DECISIONS
from universal.serving.team import CONSENSUS, consensus_label, effort_by, image_agreement, image_summary

from .conf import http_error
from .identity import request_user

ANONYMOUS = "anonymous"
NAME_LIMIT = 200  # characters of an annotator's name that are kept
REVIEWER = Annotated[User, Depends(RBAC([settings.MONAI_LABEL_AUTH_ROLE_REVIEWER,
                                          settings.MONAI_LABEL_AUTH_ROLE_ADMIN]))]
REVIEW_BODY = Annotated[dict, Body(examples=[{"classes": {"Liver": "approved", "Spleen": {
    "state": "rejected", "comment": "misses the lower pole"}}}])]


_acting_as: contextvars.ContextVar[str | None] = contextvars.ContextVar("acting_as", default=None)


@contextlib.contextmanager
def acting_as(name: str) -> Iterator[None]:
    """Labels the server saves itself in the block (a consensus, a kept version made final) are
    attributed to ``name``, whoever asked."""
    token = _acting_as.set(name)
    try:
        yield
    finally:
        _acting_as.reset(token)


def annotator(params: dict | None) -> str:
    """Who saves a label or asks for a prediction: the server itself (:func:`acting_as`), else the
    token's user name (authentication on), else the client's ``client_id`` (3D Slicer sends its
    *Client/User-ID*), else a ``user`` parameter, else ``anonymous``."""
    params = params or {}
    for found in (_acting_as.get(), request_user(), params.get("client_id"), params.get("user")):
        if isinstance(found, str) and found.strip():
            return found.strip()[:NAME_LIMIT]
    return ANONYMOUS


def team_router(current_state, current_datastore) -> APIRouter:
    """The team's routes; ``current_state()`` and ``current_datastore()`` return the running app's
    :class:`~lib.state.AppState` and datastore."""
    router = APIRouter(prefix="/universal", tags=["Annotation team"])
    user = [Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER))]

    def known(image: str) -> str:
        plain_name(image, "image id")
        if not current_datastore().get_image_uri(image):
            raise http_error(404, f"no image '{image}' in the datastore; use an id from GET /datastore/?output=all")
        return image

    @router.get("/labels/{image}", summary="Every label version of an image: annotator, time, model version, "
                                           "seconds, effort, review; each class's state", dependencies=user)
    def labels(image: str):
        return image_summary(current_state().team.record(known(image)))

    @router.get("/labels/{image}/{version}", summary="One label version as NIfTI (format=nifti) or NRRD",
                dependencies=user)
    def label_file(image: str, version: int, format: str = "nifti"):
        if format not in ("nifti", "nrrd"):
            raise http_error(422, f"format must be nifti or nrrd, got {format!r}")
        team = current_state().team
        labels, affine, _ = team.label_map(known(image), version)
        suffix = ".nii.gz" if format == "nifti" else ".nrrd"
        handle, path = tempfile.mkstemp(suffix=suffix)
        os.close(handle)
        write_label_file(labels, affine, path)
        return FileResponse(path, filename=f"{image}_v{version}{suffix}", background=BackgroundTask(Path(path).unlink))

    @router.get("/agreement/{image}", summary="Dice, mean surface distance and HD95 (mm) per class and pair of "
                                              "annotators", dependencies=user)
    def agreement(image: str):
        return image_agreement(current_state().team, known(image))

    @router.post("/review/{image}", summary="Approve or reject classes of a label version (default: the accepted "
                                            "one)")
    def review(image: str, body: REVIEW_BODY, who: REVIEWER):
        decisions = {}
        for name, decision in (body.get("classes") or {}).items():
            state, comment = (decision, "") if isinstance(decision, str) else (
                (decision or {}).get("state"), str((decision or {}).get("comment") or ""))
            if state not in DECISIONS:
                raise http_error(422, f"class '{name}': a review is {' or '.join(DECISIONS)}, got {state!r}")
            decisions[name] = (state, comment)
        if not decisions:
            raise http_error(422, "a review names classes, e.g. {\"classes\": {\"Liver\": \"approved\"}}")
        version = body.get("version")
        if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
            raise http_error(422, f"version must be a version number, got {version!r}")
        reviews = current_state().team.review(known(image), reviewer_name(who), decisions, version)
        return {"reviews": reviews, **image_summary(current_state().team.record(image))}

    @router.post("/consensus/{image}", summary="Make the annotators' consensus the accepted label")
    def make_consensus(image: str, who: REVIEWER, method: str = "majority"):
        if method not in CONSENSUS_METHODS:
            raise http_error(422, f"method must be {' or '.join(CONSENSUS_METHODS)}, got {method!r}")
        agreed, affine, values = consensus_label(current_state().team, known(image), method)
        with tempfile.TemporaryDirectory() as folder:
            path = write_label_file(agreed, affine, Path(folder) / "consensus.nii.gz")
            info = {"label_info": [{"name": name, "idx": value} for value, name in values.items()],
                    "reviewer": reviewer_name(who), "method": method}
            with acting_as(CONSENSUS):
                current_datastore().save_label(image, str(path), "final", info)
        return image_summary(current_state().team.record(image))

    @router.post("/labels/{image}/final", summary="Make a kept version the accepted label")
    def make_final(image: str, version: Annotated[int, Body(embed=True)], who: REVIEWER):
        team = current_state().team
        entry = team.version(known(image), version)
        info = {"label_info": [{"name": name, "idx": int(value)} for value, name in entry["values"].items()],
                "reviewer": reviewer_name(who), "from_version": version}
        with acting_as(entry["annotator"]):
            current_datastore().save_label(image, str(team.file(entry)), "final", info)
        return image_summary(team.record(image))

    @router.get("/effort", summary="Annotators' effort summed per annotator and per model version",
                dependencies=user)
    def effort():
        return effort_by(current_state().team.records())

    return router


def reviewer_name(who: User) -> str:
    """The reviewer's name: the token's user, or ``anonymous`` without authentication."""
    return who.username if settings.MONAI_LABEL_AUTH_ENABLE and who.username else ANONYMOUS
