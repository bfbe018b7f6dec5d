"""A PACS as the datastore, as OHIF users run it: Orthanc with DICOMweb on loopback holds phantom CT
series; the app serves them with no internet (no download at start), segments a series by its UID,
sees a DICOM SEG stored in the PACS the way a viewer stores it (segments numbered alphabetically,
only the slices that hold them) within seconds, names its segments by SegmentLabel and trains on it;
SEGs it cannot use get a 4xx naming the problem."""

from __future__ import annotations

import json
import sys

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from app_server import APP, start_server, wait_until
from dicom_series import write_ct_series
from orthanc import running_orthanc
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid
from tiny import tiny_model

import universal
from universal.catalog import Catalog
from universal.io.dicom import read_series
from universal.synth import make_phantom

PHANTOM = {"shape": (40, 40, 30), "spacing": (10.24, 10.24, 16.0)}
CLASSES = ["Liver", "Spleen", "Stomach", "Right Kidney", "Left Kidney"]
RELEASED = "clip_driven_universal_unet.pth"


@pytest.fixture(scope="module")
def pacs(tmp_path_factory):
    """Orthanc holding four phantom CT series; yields (orthanc, {series UID: (folder, phantom)})."""
    root = tmp_path_factory.mktemp("pacs")
    with running_orthanc(root) as orthanc:
        series = {}
        for seed in range(4):
            phantom = make_phantom(seed, **PHANTOM)
            folder = root / f"ct{seed}"
            write_ct_series(phantom.image, phantom.affine, folder, patient_id=f"P{seed}")
            orthanc.client().store_instances([pydicom.dcmread(path) for path in sorted(folder.iterdir())])
            series[str(read_series(folder)[0].SeriesInstanceUID)] = (folder, phantom)
        yield orthanc, series


@pytest.fixture(scope="module")
def server(pacs, tmp_path_factory, random_clip_weights):
    orthanc, _ = pacs
    root = tmp_path_factory.mktemp("server")
    model_dir = root / "model"
    model_dir.mkdir()
    universal.save_model(tiny_model(CLASSES), model_dir / RELEASED)
    env = {"UNIVERSAL_OFFLINE": "1", "UNIVERSAL_CACHE_DIR": str(root / "cache"),
           "UNIVERSAL_CLIP_WEIGHTS": str(random_clip_weights), "MONAI_LABEL_DICOMWEB_CACHE_PATH": str(root / "dicom"),
           "PATH": "/usr/bin:/bin"}  # no dcmqi anywhere: nothing may be needed from outside
    started = start_server(root, orthanc.dicomweb, {"model_dir": str(model_dir)}, env)
    yield started
    started.stop()


def viewer_seg(folder, phantom, names: list[str], *, slices=None, creator=None) -> pydicom.Dataset:
    """A SEG of the phantom's truth for ``names`` as a viewer stores it: segments numbered in
    alphabetical order of their names, frames only where a segment has voxels (or only ``slices``),
    its ContentCreatorName ``creator``."""
    catalog = Catalog.default()
    source = read_series(folder)
    ordered = sorted(names)
    frames = np.zeros((len(source), phantom.label.shape[1], phantom.label.shape[0]), np.uint8)
    for number, name in enumerate(ordered, start=1):
        for k, _ in enumerate(source):
            if slices is None or k in slices:
                frames[k][catalog[name].id == phantom.label[:, :, k].T] = number
    structure, organ = Code("123037004", "SCT", "Anatomical Structure"), Code("85756007", "SCT", "Tissue")
    descriptions = [hd.seg.SegmentDescription(number, name, structure, organ, hd.seg.SegmentAlgorithmTypeValues.MANUAL)
                    for number, name in enumerate(ordered, start=1)]
    return hd.seg.Segmentation(source_images=source, pixel_array=frames,
                               segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
                               segment_descriptions=descriptions, series_instance_uid=generate_uid(),
                               series_number=99, sop_instance_uid=generate_uid(), instance_number=1,
                               manufacturer="viewer", manufacturer_model_name="viewer", software_versions="1",
                               device_serial_number="1", omit_empty_frames=frames.any(),
                               content_creator_name=creator)


def wait_for_label(server, image: str, status: int = 200, timeout: float = 20.0):
    def answered():  # in a list: a 4xx response is falsy
        answer = server.get("/datastore/label", params={"label": image, "tag": "final"})
        return [answer] if answer.status_code == status else None

    return wait_until(answered, timeout, f"the final label of {image} answering {status}")[0]


def test_the_server_starts_offline_and_segments_a_series_by_its_uid(server, pacs):
    _, series = pacs
    info = server.get("/info/").json()
    assert info["universal"]["ready"]
    assert "dcmqi" not in server.log_text() and not (server.app_dir / "bin" / "itkimage2segimage").exists()
    image = sorted(series)[0]
    answer = server.post("/infer/universal", params={"image": image, "output": "image"},
                         data={"params": json.dumps({"result_extension": ".nii.gz"})})
    assert answer.status_code == 200, answer.text
    result = server.app_dir.parent / "result.nii.gz"
    result.write_bytes(answer.content)
    _, phantom = series[image]
    assert nib.load(result).shape == phantom.image.shape
    assert np.allclose(nib.load(result).affine, phantom.affine, atol=1e-3)
    unknown = server.post("/infer/universal", params={"image": "1.2.3.4"})
    assert unknown.status_code == 404 and "no image" in unknown.json()["detail"]


def test_a_prediction_comes_back_as_a_dicom_seg_that_goes_into_the_pacs(server, pacs, tmp_path):
    orthanc, series = pacs
    image = sorted(series)[0]
    answer = server.post("/infer/universal", params={"image": image, "output": "image"},
                         data={"params": json.dumps({"result_extension": ".dcm", "classes": "liver, spleen"})})
    assert answer.status_code == 200, answer.text
    (tmp_path / "seg.dcm").write_bytes(answer.content)
    seg = pydicom.dcmread(tmp_path / "seg.dcm")
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == image
    assert {s.SegmentLabel for s in seg.SegmentSequence} <= {"Liver", "Spleen"}
    orthanc.client().store_instances([seg])
    stored = wait_for_label(server, image)
    assert stored.status_code == 200, stored.text
    info = server.get("/datastore/label/info", params={"label": image, "tag": "final"}).json()
    assert {entry["name"] for entry in info["label_info"]} == {s.SegmentLabel for s in seg.SegmentSequence}


def test_a_seg_stored_in_the_pacs_is_a_named_final_label_within_seconds_and_trains(server, pacs, tmp_path):
    orthanc, series = pacs
    image = sorted(series)[1]
    folder, phantom = series[image]
    liver_slices = {k for k in range(phantom.label.shape[2]) if (phantom.label[:, :, k] == 6).any()}
    some = set(sorted(liver_slices)[: max(1, len(liver_slices) // 2)])  # the viewer stored half the slices
    seg = viewer_seg(folder, phantom, ["Spleen", "Liver", "Stomach"], slices=some, creator="Radiologist^Ann")
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["Liver", "Spleen", "Stomach"]  # 1, 2, 3
    orthanc.client().store_instances([seg])
    answer = wait_for_label(server, image)
    assert answer.status_code == 200, answer.text
    (tmp_path / "label.nii.gz").write_bytes(answer.content)
    label = np.asarray(nib.load(tmp_path / "label.nii.gz").dataobj)
    info = server.get("/datastore/label/info", params={"label": image, "tag": "final"}).json()
    names = {entry["idx"]: entry["name"] for entry in info["label_info"]}
    assert set(names.values()) <= {"Liver", "Spleen", "Stomach"} and "Liver" in names.values()
    catalog = Catalog.default()
    for value, name in names.items():
        truth = np.isin(phantom.label, catalog.ids([name]))
        truth[:, :, [k for k in range(truth.shape[2]) if k not in some]] = False
        assert np.array_equal(label == value, truth), name
    versions = server.get(f"/universal/labels/{image}").json()["versions"]  # kept as a version, by its author
    assert [(v["annotator"], v["source"]) for v in versions] == [("Radiologist^Ann", "saved")]
    assert {v["values"][str(value)] for v in versions for value in names} == set(names.values())

    status = server.train({"max_epochs": 1, "device": "cpu", "gate_tolerance": 1.0, "val_split": 0.0})
    assert status.get("status") == "DONE", json.dumps(status, indent=1)[-3000:]
    stats = server.get("/info/").json()["train_stats"]["universal"]
    assert stats["published"] and image in stats["training_cases"]


@pytest.mark.parametrize("problem, message", [
    ("another grid", "drawn on another series"),
    ("no segment", "holds no segment"),
])
def test_segs_the_app_cannot_use_get_a_4xx_naming_the_problem(server, pacs, tmp_path, problem, message):
    orthanc, series = pacs
    image = sorted(series)[2] if problem == "another grid" else sorted(series)[3]
    folder, phantom = series[image]
    if problem == "another grid":
        other = tmp_path / "other"
        bigger = make_phantom(9, shape=(44, 40, 30), spacing=PHANTOM["spacing"])
        write_ct_series(bigger.image, bigger.affine, other)
        seg = viewer_seg(other, bigger, ["Liver"])
        seg.ReferencedSeriesSequence[0].SeriesInstanceUID = image  # claims the series it was not drawn on
    else:
        seg = viewer_seg(folder, phantom, ["Liver"], slices=set())
    orthanc.client().store_instances([seg])
    answer = wait_for_label(server, image, status=422)
    assert answer.status_code == 422, answer.text
    assert message in answer.json()["detail"]



def test_the_pacs_is_asked_for_each_seg_s_references_once(pacs, tmp_path):
    """Listing the labelled images asks the PACS for the SEG series (one query) and for the metadata
    of each SEG series only the first time it is seen."""
    sys.path.insert(0, str(APP))
    from lib.pacs import PacsDatastore, dicomweb_client

    orthanc, series = pacs
    client = dicomweb_client(orthanc.dicomweb)
    asked = []
    retrieve = client.retrieve_series_metadata
    client.retrieve_series_metadata = lambda *uids, **kwargs: asked.append(uids) or retrieve(*uids, **kwargs)
    datastore = PacsDatastore(client, {"Modality": "CT"}, str(tmp_path / "cache"), check_label=lambda *a: a[2],
                              catalog=Catalog.default, on_final=lambda *a: None)
    image = sorted(series)[0]
    folder, phantom = series[image]
    orthanc.client().store_instances([viewer_seg(folder, phantom, ["Liver"])])
    assert image in datastore.get_labeled_images()
    first = len(asked)
    assert first >= 1
    datastore.refresh()
    assert image in datastore.get_labeled_images()
    assert len(asked) == first  # known SEG series are not asked about again
