"""A studies folder as MONAI Label keeps it, read without MONAI Label: ``datastore_v2.json`` (the
layout of ``LocalDatastoreModel`` in monailabel/datastore/local.py: ``images_dir``, ``labels_dir`` and
``objects``, each ``{"image": {"ext", "info"}, "labels": {tag: {"ext", "info"}}}``), the images and
labels it names, and the team's label history beside them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from universal.errors import UniversalError
from universal.io.names import plain_name
from universal.serving.label_versions import TEAM_FOLDER, LabelVersions

INDEX = "datastore_v2.json"


@dataclass(frozen=True)
class Study:
    """One image of the folder: its ``image`` file and info, and its ``final`` label file and info
    (``None`` for an unlabelled image)."""

    id: str
    image: Path
    image_info: dict
    final: Path | None
    final_info: dict


class StudiesFolder:
    """The studies at ``folder`` and their label history (``team``)."""

    def __init__(self, folder: str | Path, team: str | Path | None = None):
        self.folder = Path(folder)
        index = self.folder / INDEX
        if not index.is_file():
            raise UniversalError(f"{self.folder} holds no {INDEX}: give a studies folder a MONAI Label server has "
                                 "served, or the server's URL")
        try:
            self.index = json.loads(index.read_text())
        except ValueError as error:
            raise UniversalError(f"{index} is damaged ({error})") from error
        self.team = LabelVersions(team or self.folder / TEAM_FOLDER)

    def ids(self) -> list[str]:
        return sorted(self.index.get("objects", {}))

    def study(self, image_id: str) -> Study:
        entry = self.index["objects"].get(image_id)
        if entry is None:
            raise UniversalError(f"no image '{image_id}' in {self.folder}; its images: {', '.join(self.ids()[:5])} ...")
        images = self.folder / self.index.get("images_dir", "")
        image = images / f"{plain_name(image_id, 'image id')}{entry['image']['ext']}"
        final = (entry.get("labels") or {}).get("final")
        label = self.folder / self.index.get("labels_dir", "labels") / "final" / f"{image_id}{final['ext']}" \
            if final else None
        return Study(image_id, image, entry["image"].get("info") or {}, label, (final or {}).get("info") or {})

    def studies(self) -> Iterator[Study]:
        """Every study, one at a time."""
        for image_id in self.ids():
            yield self.study(image_id)
