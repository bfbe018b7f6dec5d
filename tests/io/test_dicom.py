"""DICOM: a phantom written as a CT series reads back as it was; a label map written as DICOM SEG
(names, codes, colours, the referenced series) reads back onto the series' grid, also when the SEG
holds only the slices with segments; SEGs that do not fit are refused by name."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from dicom_series import write_ct_series

from universal import Catalog, read_scan
from universal.io.dicom import (
    SegmentationError,
    read_segmentation,
    read_series,
    series_geometry,
    write_segmentation,
)
from universal.synth import make_phantom

PHANTOM = {"shape": (40, 36, 12), "spacing": (10.0, 11.0, 20.0)}


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ct")
    phantom = make_phantom(2, orientation="LPS", **PHANTOM)
    write_ct_series(phantom.image, phantom.affine, folder)
    return folder, phantom


def test_a_ct_series_reads_back_as_the_volume_it_was_written_from(series):
    folder, phantom = series
    scan = read_scan(folder)
    assert scan.shape == phantom.image.shape
    assert np.allclose(scan.affine, phantom.affine, atol=1e-4)
    assert np.array_equal(scan.image, phantom.image.astype(np.float32))
    geometry = series_geometry(read_series(folder))
    assert geometry.shape == scan.shape and np.allclose(geometry.affine, scan.affine, atol=1e-4)


def test_a_label_map_round_trips_through_dicom_seg(series, tmp_path):
    folder, phantom = series
    catalog = Catalog.default()
    label = np.where(np.isin(phantom.label, catalog.ids(["Liver", "Right Kidney", "Spleen"])), phantom.label, 0)
    path = write_segmentation(label.astype(np.uint8), catalog, read_series(folder), tmp_path / "seg.dcm")
    seg = pydicom.dcmread(path)
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["Spleen", "Right Kidney", "Liver"]  # by id
    kidney = seg.SegmentSequence[1].SegmentedPropertyTypeCodeSequence[0]
    assert (kidney.CodeValue, kidney.CodeMeaning) == ("64033007", "Kidney")
    assert kidney.SegmentedPropertyTypeModifierCodeSequence[0].CodeMeaning == "Right"
    assert len(seg.SegmentSequence[0].RecommendedDisplayCIELabValue) == 3
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == read_series(folder)[0].SeriesInstanceUID
    assert int(seg.NumberOfFrames) < 3 * label.shape[2]  # empty frames are left out
    back, names = read_segmentation(path, series_geometry(read_series(folder)))
    assert names == {1: "Spleen", 2: "Right Kidney", 3: "Liver"}
    for number, name in names.items():
        assert np.array_equal(back == number, label == catalog[name].id), name


def test_segs_that_do_not_fit_are_refused_by_name(series, tmp_path):
    folder, _ = series
    geometry = series_geometry(read_series(folder))
    with pytest.raises(SegmentationError, match="is not a DICOM Segmentation"):
        read_segmentation(sorted(folder.iterdir())[0], geometry)
    other = tmp_path / "other"
    bigger = make_phantom(2, shape=(44, 36, 12), spacing=(10.0, 11.0, 20.0))
    write_ct_series(bigger.image, bigger.affine, other)
    liver = (bigger.label == Catalog.default()["Liver"].id).astype(np.uint8) * 6
    seg = write_segmentation(liver, Catalog.default(), read_series(other), tmp_path / "other.dcm")
    with pytest.raises(SegmentationError, match="drawn on another series"):
        read_segmentation(seg, geometry)
