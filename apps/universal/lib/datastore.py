"""A local datastore that checks uploads before keeping them, so a bad upload changes nothing."""

from __future__ import annotations

import logging
from collections.abc import Callable

from monailabel.datastore.local import LocalDatastore

from universal.io.scans import ScanError, ScanTooLargeError, read_scan

from .conf import http_error

log = logging.getLogger(__name__)


class CheckedDatastore(LocalDatastore):
    """:class:`LocalDatastore` whose ``add_image`` accepts only readable CT volumes and whose
    ``save_label`` passes final labels through ``check_label(image_id, label_file, info) -> info``
    (which raises an HTTP error for a label it refuses) before anything is written."""

    def __init__(self, *args, check_label: Callable[[str, str, dict], dict], max_voxels: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.check_label = check_label
        self.max_voxels = max_voxels

    def add_image(self, image_id: str, image_filename: str, image_info: dict) -> str:
        try:
            read_scan(image_filename, max_voxels=self.max_voxels)
        except ScanError as error:
            status = 413 if isinstance(error, ScanTooLargeError) else 422
            raise http_error(status, f"image '{image_id}' was not added: {error}") from error
        return super().add_image(image_id, image_filename, image_info)

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict) -> str:
        if not self.get_image_uri(image_id):
            raise http_error(404, f"no image '{image_id}' in the datastore; add the image first "
                                  "(PUT /datastore/image) or use an id from GET /datastore/?output=all")
        if label_tag == "final":
            label_info = self.check_label(image_id, label_filename, dict(label_info or {}))
        return super().save_label(image_id, label_filename, label_tag, label_info)
