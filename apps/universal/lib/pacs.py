"""A PACS (DICOMweb: QIDO-RS, WADO-RS, STOW-RS) as the datastore, with no download at start.

MONAI Label 0.8.5's own DICOMweb datastore fetches dcmqi from GitHub when the app starts
(``MONAILabelApp._init_dicomweb_datastore`` → ``_download_dcmqi_tools`` in
monailabel/interfaces/app.py), keeps its list of labelled images for two hours
(``MONAI_LABEL_DICOMWEB_CACHE_EXPIRY`` = 7200 s in monailabel/config.py), treats the image id
passed to ``get_label_uri`` as a SEG's series UID, and numbers a SEG's segments by position in
``label_info``. This one reads and writes DICOM SEG with the library (:mod:`universal.io.dicom`,
highdicom), sees a new SEG within :data:`LIST_TTL_S` seconds, names each segment by its
SegmentLabel, and places a SEG that holds only some slices on its CT series' grid.

Image ids are CT SeriesInstanceUIDs; a CT's final label is the newest SEG that references it.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
from monailabel.datastore.dicom import DICOMWebDatastore
from pydicom.dataset import Dataset

from universal.catalog import Catalog
from universal.errors import UniversalError
from universal.io.atomic import atomic_write_text
from universal.io.dicom import SegmentationError, read_segmentation, read_series, series_geometry, write_segmentation
from universal.io.labels import read_label_map, write_label_file
from universal.io.names import plain_name
from universal.serving.annotations import AnnotationError

from .conf import http_error

log = logging.getLogger(__name__)

LIST_TTL_S = 5.0  # the PACS is asked again for its series after this many seconds
SEG = "SEG"
FINAL = "final"
PACS_AUTHOR = "pacs"  # the annotator of a SEG that names none


class PacsDatastore(DICOMWebDatastore):
    """CT series of a PACS as images, its DICOM SEGs as final labels.

    ``check_label(image_id, label_file, info) -> info`` vets a label before it is stored (HTTP 4xx
    for one the trainer could not use); ``catalog()`` gives the classes that name label values;
    ``on_final(image_id, label_file, info)`` keeps each SEG, once converted, as a label version
    (its annotator: the SEG's ContentCreatorName).
    """

    def __init__(self, client, search_filter: dict, cache_path: str | None,
                 check_label: Callable[[str, str, dict], dict], catalog: Callable[[], Catalog],
                 on_final: Callable[[str, str, dict], None]):
        super().__init__(client, search_filter, cache_path, fetch_by_frame=False, convert_to_nifti=False)
        self.check_label, self.on_final = check_label, on_final
        self.catalog = catalog
        self._listed: tuple[float, list[str], dict[str, dict]] | None = None
        self._seg_targets: dict[str, tuple[str, str] | None] = {}  # SEG series UID: (CT series UID, time)

    # -- what the PACS holds --

    def _series(self) -> tuple[list[str], dict[str, dict]]:
        """(CT series UIDs, {CT series UID: its newest SEG's study, series and time}), asked again
        after :data:`LIST_TTL_S` seconds."""
        if self._listed is None or time.monotonic() - self._listed[0] > LIST_TTL_S:
            images = [_uid(ds, "SeriesInstanceUID") for ds in self._client.search_for_series(
                search_filters=self._search_filter)]
            segs: dict[str, dict] = {}
            for found in self._client.search_for_series(search_filters={"Modality": SEG}):
                study, series = _uid(found, "StudyInstanceUID"), _uid(found, "SeriesInstanceUID")
                target = self._seg_target(study, series)
                if target is None:
                    continue
                image, stamp = target
                if image not in segs or stamp >= segs[image]["stamp"]:
                    segs[image] = {"study": study, "series": series, "stamp": stamp}
            self._listed = (time.monotonic(), images, segs)
        return self._listed[1], self._listed[2]

    def _seg_target(self, study: str, series: str) -> tuple[str, str] | None:
        """(the CT series a SEG series references, its date and time), asked of the PACS once per SEG
        series (a stored series keeps its UID and its references); ``None`` for one that references none."""
        if series not in self._seg_targets:
            meta = Dataset.from_json(self._client.retrieve_series_metadata(study, series)[0])
            references = meta.get("ReferencedSeriesSequence")
            stamp = f"{meta.get('SeriesDate', '')}{meta.get('SeriesTime', '')}"
            self._seg_targets[series] = (str(references[0].SeriesInstanceUID), stamp) if references else None
            if not references:
                log.warning("SEG series %s references no series; left out", series)
        return self._seg_targets[series]

    def refresh(self) -> None:
        """Forget the cached listing: the next question goes to the PACS."""
        self._listed = None

    def list_images(self) -> list[str]:
        return self._series()[0]

    def get_labeled_images(self, label_tag: str | None = None, labels=None) -> list[str]:
        images, segs = self._series()
        return [image for image in images if image in segs]

    def get_unlabeled_images(self, label_tag: str | None = None, labels=None) -> list[str]:
        images, segs = self._series()
        return [image for image in images if image not in segs]

    # -- images --

    def get_image_uri(self, image_id: str) -> str:
        """The folder of the CT series' files, downloaded whole before it is used."""
        if image_id not in self.list_images():
            return ""
        folder = Path(self._datastore.image_path()) / image_id
        if not folder.is_dir():
            _download(self._client, image_id, folder)
        return str(folder)

    def add_image(self, image_id: str, image_filename: str, image_info: dict) -> str:
        raise http_error(405, "images come from the PACS: store the CT series there (STOW-RS) and it is listed "
                              f"within {LIST_TTL_S:g} seconds")

    # -- labels --

    def get_label_uri(self, label_id: str, label_tag: str, image_id: str = "") -> str:
        """For the final tag: the newest SEG of CT series ``image_id`` (or ``label_id``) as a NIfTI label
        map on the CT's grid, values = segment numbers named in its label info. Raises a 422 naming the
        problem for a SEG that cannot be used."""
        if plain_name(label_tag, "label tag") != FINAL:
            return super(DICOMWebDatastore, self).get_label_uri(label_id, label_tag)
        image = image_id or label_id
        seg = self._series()[1].get(image)
        if seg is None:
            return ""
        converted = Path(self._datastore.label_path(FINAL)) / f"{seg['series']}.nii.gz"
        if not converted.is_file():
            self._convert(image, seg, converted)
        return str(converted)

    def get_label_info(self, label_id: str, label_tag: str) -> dict:
        if plain_name(label_tag, "label tag") != FINAL:
            return super().get_label_info(label_id, label_tag)
        path = self.get_label_uri(label_id, label_tag)
        return json.loads(_info_file(Path(path)).read_text()) if path else {}

    def _convert(self, image: str, seg: dict, converted: Path) -> None:
        with tempfile.TemporaryDirectory() as folder:
            _download(self._client, seg["series"], Path(folder) / "seg", study=seg["study"])
            files = sorted((Path(folder) / "seg").iterdir())
            try:
                geometry = series_geometry(read_series(self.get_image_uri(image)))
                label, names = read_segmentation(files[0], geometry)
            except (SegmentationError, UniversalError) as error:
                raise AnnotationError(f"the final label of {image} (SEG {seg['series']}) cannot be used: {error}") \
                    from error
            creator = str(pydicom.dcmread(files[0], stop_before_pixels=True).get("ContentCreatorName") or "")
        info = {"label_info": [{"name": name, "idx": value} for value, name in names.items()],
                "SeriesInstanceUID": seg["series"], "ReferencedSeriesInstanceUID": image}
        atomic_write_text(_info_file(converted), json.dumps(info))
        write_label_file(label, geometry.affine, converted)  # last: its presence marks a finished conversion
        # the SEG's author, as the viewer that stored it names them (OHIF: ContentCreatorName), else the PACS
        self.on_final(image, str(converted), {"values": {str(value): name for value, name in names.items()},
                                              "annotator": creator or PACS_AUTHOR, "seg_series": seg["series"]})

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict,
                   label_id: str = "") -> str:
        """A final label (3D Slicer's upload) is stored in the PACS as a DICOM SEG referencing the CT."""
        if image_id not in self.list_images():
            raise http_error(404, f"no CT series '{image_id}' in the PACS; use an id from GET /datastore/?output=all")
        if plain_name(label_tag, "label tag") != FINAL:
            return super(DICOMWebDatastore, self).save_label(image_id, label_filename, label_tag, label_info)
        info = self.check_label(image_id, label_filename, dict(label_info or {}))
        catalog = self.catalog()
        labels, _ = read_label_map(label_filename)
        named = {int(entry["idx"]): entry["name"] for entry in info.get("label_info") or []}
        ids = np.zeros(256, np.uint8)  # the label's values → catalogue ids (values are ids without label_info)
        for value in np.flatnonzero(np.bincount(labels.ravel(), minlength=256))[1:]:
            ids[value] = catalog[named.get(int(value), int(value))].id
        with tempfile.TemporaryDirectory() as folder:
            path = write_segmentation(ids[labels], catalog, read_series(self.get_image_uri(image_id)),
                                      Path(folder) / "label.dcm", description="Universal Model: annotator's label",
                                      creator=info.get("annotator"))
            self._client.store_instances([pydicom.dcmread(path)])
        self.refresh()
        self.get_label_uri(image_id, FINAL)  # converted now, so the version is kept now
        log.info("final label of %s stored in the PACS as DICOM SEG", image_id)
        return image_id


def dicomweb_client(url: str):
    """The DICOMweb client MONAI Label builds for ``url`` (its prefixes and credentials from its
    settings, as in ``MONAILabelApp._init_dicomweb_datastore``), without the dcmqi download."""
    from dicomweb_client.session_utils import create_session_from_user_pass
    from monailabel.config import settings
    from monailabel.datastore.dicom import DICOMwebClientX

    session = None
    if settings.MONAI_LABEL_DICOMWEB_USERNAME and settings.MONAI_LABEL_DICOMWEB_PASSWORD:
        session = create_session_from_user_pass(settings.MONAI_LABEL_DICOMWEB_USERNAME,
                                                settings.MONAI_LABEL_DICOMWEB_PASSWORD)
    return DICOMwebClientX(url=url, session=session, qido_url_prefix=settings.MONAI_LABEL_QIDO_PREFIX,
                           wado_url_prefix=settings.MONAI_LABEL_WADO_PREFIX,
                           stow_url_prefix=settings.MONAI_LABEL_STOW_PREFIX)


def _info_file(converted: Path) -> Path:
    """The label info beside a converted SEG (``<SEG series UID>.nii.gz`` → ``<SEG series UID>.json``)."""
    return converted.with_name(converted.name.removesuffix(".nii.gz") + ".json")


def _uid(found: dict, keyword: str) -> str:
    return str(Dataset.from_json(found)[keyword].value)


def _download(client, series: str, folder: Path, study: str | None = None) -> None:
    """Every instance of ``series`` into ``folder``, which appears only once it is complete."""
    if study is None:
        found = client.search_for_series(search_filters={"SeriesInstanceUID": series})
        if not found:
            raise http_error(404, f"no series '{series}' in the PACS")
        study = _uid(found[0], "StudyInstanceUID")
    partial = folder.with_name(folder.name + ".part")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for instance in client.retrieve_series(study, series):
        instance.save_as(partial / f"{instance.SOPInstanceUID}.dcm")
    partial.rename(folder)
