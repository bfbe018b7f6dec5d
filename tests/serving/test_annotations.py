"""Annotators' labels: what their values mean and which classes they annotate."""

from __future__ import annotations

import numpy as np
from tiny import PHANTOM

from universal.catalog import Catalog
from universal.io.labels import write_label_file
from universal.serving.annotations import read_annotation
from universal.synth import make_phantom, save_phantom
from universal.training.loop import catalog_for


def test_label_info_names_values_and_unannotated_segments_are_left_out(tmp_path):
    catalog = catalog_for(["Liver", "Spleen"])
    phantom = make_phantom(0, **PHANTOM)
    save_phantom(phantom, tmp_path / "image.nii.gz")
    label = np.where(phantom.label == Catalog.default()["Liver"].id, 3, 0).astype(np.uint8)
    write_label_file(label, phantom.affine, tmp_path / "label.nrrd")
    info = [{"name": "spleen", "idx": 1}, {"name": "Appendix", "idx": 2}, {"name": "liver", "idx": 3}]
    annotation = read_annotation("case", tmp_path / "image.nii.gz", tmp_path / "label.nrrd", info, catalog)
    assert annotation.values == {3: "Liver"}  # listed but empty segments say nothing about the image
