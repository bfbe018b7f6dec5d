"""What the team delivers and the lead looks at: ``GET /universal/export`` (the labelled dataset as a
zip stream, admin), ``GET /universal/dashboard`` (a page served from ``apps/universal/static``, no
script or style from elsewhere), ``GET /universal/overview`` (what it shows, the same records the API
answers) and ``GET /universal/preview/{image}`` (an image's pre-label picture)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse, StreamingResponse
from monailabel.config import settings
from monailabel.endpoints.user.auth import RBAC

from universal.errors import UniversalError
from universal.export import FORMATS, LABELS, export_dataset
from universal.io.archive import zip_chunks
from universal.io.names import plain_name
from universal.serving.overview import overview

from .conf import http_error
from .datastore import CheckedDatastore

STATIC = Path(__file__).resolve().parents[1] / "static"
PAGES = {"dashboard": ("dashboard.html", "text/html"), "dashboard.js": ("dashboard.js", "text/javascript"),
         "dashboard.css": ("dashboard.css", "text/css")}
PREVIEWS = "previews"  # beside the team's label history: <team>/previews/<image>.png


def delivery_router(current_state, current_datastore) -> APIRouter:
    router = APIRouter(prefix="/universal", tags=["Delivery"])
    user = [Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER))]
    admin = [Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ADMIN))]

    for page, (name, media) in PAGES.items():  # the page asks for a token itself, as the API does
        router.add_api_route(f"/{page}", _static(name, media), methods=["GET"], include_in_schema=page == "dashboard",
                             summary="The team dashboard: progress, annotators, agreement, findings, models")

    @router.get("/overview", summary="What the dashboard shows", dependencies=user)
    def team_overview():
        state, datastore = current_state(), current_datastore()
        images = datastore.list_images()
        infos = {image: datastore.get_image_info(image) for image in images}
        found = overview(state.team, state.store, infos, set(datastore.get_labeled_images()))
        for item in found["findings"]:
            if (state.team.folder / PREVIEWS / f"{item['image']}.png").is_file():
                item["preview"] = f"preview/{item['image']}"
        found["batch"] = _batch_status()
        return found

    @router.get("/preview/{image}", summary="An image's pre-label picture", dependencies=user)
    def preview(image: str):
        path = current_state().team.folder / PREVIEWS / f"{plain_name(image, 'image id')}.png"
        if not path.is_file():
            raise http_error(404, f"no preview of '{image}': batch inference writes one per image it pre-labels")
        return FileResponse(path, media_type="image/png")

    @router.get("/export", summary="The labelled dataset as a zip: nnU-Net v2, MSD or NIfTI, with provenance.csv",
                dependencies=admin)
    def export(format: str = "nnunetv2", labels: str = "final", classes: str = "", images: str = "",
               name: str = "Universal", dataset_id: int = 501):
        if format not in FORMATS or labels not in LABELS:
            raise http_error(422, f"format is one of {', '.join(FORMATS)} and labels one of {', '.join(LABELS)}")
        if not name.replace("_", "").replace("-", "").isalnum():
            raise http_error(422, f"name {name!r}: letters, digits, '-' and '_' only (it names the dataset's folder)")
        datastore = current_datastore()
        if not isinstance(datastore, CheckedDatastore):
            raise http_error(409, "an export reads a local studies folder; for a PACS, export from the PACS itself")
        folder = Path(tempfile.mkdtemp(prefix="universal-export-"))
        try:
            summary = export_dataset(datastore.folder, folder, format, labels=labels,
                                     classes=[c.strip() for c in classes.split(",") if c.strip()] or None,
                                     images=[i.strip() for i in images.split(",") if i.strip()] or None,
                                     name=name, dataset_id=dataset_id, catalog=current_state().catalog())
        except UniversalError as error:
            shutil.rmtree(folder, ignore_errors=True)
            raise http_error(422, f"nothing exported: {error}") from error

        def stream():
            try:
                yield from zip_chunks(folder)
            finally:
                shutil.rmtree(folder, ignore_errors=True)

        return StreamingResponse(stream(), media_type="application/zip", headers={
            "Content-Disposition": f'attachment; filename="{summary.folder.name or name}.zip"'})

    return router


def _static(name: str, media: str):
    def page():
        return FileResponse(STATIC / name, media_type=media)

    return page


def _batch_status() -> dict | None:
    """MONAI Label's latest batch inference task (its status and when it ran), if any."""
    from monailabel.utils.async_tasks.task import AsyncTask

    found, _ = AsyncTask.status("batch_infer", False, False)
    return {k: found.get(k) for k in ("status", "start_ts", "end_ts")} if isinstance(found, dict) else None
