"""Every segment name a viewer shows holds the voxels ``universal segment`` gives that class.

The requests and the reading of the answers follow the viewers' own code in the MONAILabel
repository: 3D Slicer's module (plugins/slicer/MONAILabel/MONAILabel.py: ``getParamsFromConfig``
sends every options-table key, ``onClickSegmentation`` sorts ``label_names`` by value and
``updateSegmentationMask`` makes a segment of every name, the k-th holding value k, through
``ImportLabelmapToSegmentationNode``)
and OHIF v3's panel (plugins/ohifv3/extensions/monai-label/src: ``MonaiLabelClient.infer`` asks for
``output=image`` with a raw uint8 NRRD, ``MonaiLabelPanel.onInfo`` maps names to the ``/info`` ids,
``updateView`` names each value by that map, ``ClassPrompts`` sends the ticked ids as
``label_prompt``). The model is the learning test's, whose classes fill their own regions.
"""

from __future__ import annotations

import io
import json
import shutil

import nrrd
import numpy as np
import pytest
import torch
from app_server import start_server
from requests_toolbelt.multipart import decoder

import universal
from universal.synth import make_phantom, save_phantom

RELEASED = "clip_driven_universal_unet.pth"
PHANTOM = {"shape": (64, 64, 48), "spacing": (6.4, 6.4, 10.0)}  # the learned model's phantoms


@pytest.fixture(scope="module")
def server(learned, tmp_path_factory, random_clip_weights):
    root = tmp_path_factory.mktemp("viewers")
    studies = root / "studies"
    studies.mkdir()
    save_phantom(make_phantom(9003, **PHANTOM), studies / "patient.nii.gz")
    model_dir = root / "model"
    model_dir.mkdir()
    shutil.copy(learned / "model.pt", model_dir / RELEASED)
    env = {"UNIVERSAL_OFFLINE": "1", "UNIVERSAL_CACHE_DIR": str(root / "cache"),
           "UNIVERSAL_CLIP_WEIGHTS": str(random_clip_weights)}
    started = start_server(root, studies, {"model_dir": str(model_dir)}, env)
    yield started
    started.stop()


def served_label_map(server, classes=None) -> np.ndarray:
    """What ``universal segment`` gives on the server's image with the model it serves (one thread, as
    the server computes)."""
    weights = server.get("/info/").json()["universal"]["weights"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        segmenter = universal.Segmenter(universal.load_model(weights), progress=False)
        return segmenter(universal.read_scan(server.studies / "patient.nii.gz"), classes).label_map
    finally:
        torch.set_num_threads(threads)


def slicer_segments(server, typed: dict | None = None) -> dict[str, np.ndarray]:
    """3D Slicer's Auto Segmentation: the options table's values (``typed`` over the defaults) as
    params, the answer's label map turned into segments, the k-th name by value holding value k."""
    config = server.get("/info/").json()["models"]["universal"]["config"]
    params = {k: v[0] if isinstance(v, list) else v for k, v in config.items()}
    params.update(typed or {}, result_extension=".nrrd", result_dtype="uint8")
    answer = server.post("/infer/universal", params={"image": "patient"}, data={"params": json.dumps(params)})
    assert answer.status_code == 200, answer.text
    parts = decoder.MultipartDecoder.from_response(answer).parts
    form = next(p for p in parts if b"filename" not in p.headers[b"Content-Disposition"])
    image = next(p for p in parts if b"filename" in p.headers[b"Content-Disposition"])
    label_names = json.loads(form.content)["label_names"]
    names = [name for name, _ in sorted(label_names.items(), key=lambda item: item[1]) if name != "background"]
    voxels = read_nrrd(image.content)
    return {name: voxels == value for value, name in enumerate(names, start=1)}


def ohif_segments(server, ticked: list[str] | None = None) -> dict[str, np.ndarray]:
    """OHIF's Auto-Segmentation (``ticked`` None) or Class Prompts (the ticked names' ids as
    ``label_prompt``): each value of the raw uint8 NRRD named by the name whose /info id it is."""
    ids = server.get("/info/").json()["models"]["universal"]["labels"]  # modelLabelToIdxMap
    params = {} if ticked is None else {"label_prompt": [ids[name] for name in ticked]}
    params.update(result_extension=".nrrd", result_dtype="uint8", result_compress=False, restore_label_idx=False)
    answer = server.post("/infer/universal", params={"image": "patient", "output": "image"},
                         data={"params": json.dumps(params)})
    assert answer.status_code == 200, answer.text
    assert b"encoding: raw" in answer.content.partition(b"\n\n")[0]  # the panel reads the voxels as bytes
    voxels = read_nrrd(answer.content)
    return {name: voxels == ids[name] for name in (sorted(ids) if ticked is None else ticked)}


def read_nrrd(content: bytes) -> np.ndarray:
    header = nrrd.read_header(io.BytesIO(content))
    data = nrrd.read_data(header, io.BytesIO(content.partition(b"\n\n")[2]), filename=None)
    return np.asarray(data)


def assert_named_right(segments: dict[str, np.ndarray], label_map: np.ndarray, catalog) -> None:
    shown = [name for name, mask in segments.items() if mask.any()]
    assert len(shown) >= 3, shown  # the model's classes fill regions of their own
    for name, mask in segments.items():
        assert np.array_equal(mask, label_map == catalog[name].id), name


def test_slicer_shows_every_class_by_name_for_all_a_subset_and_a_class_added_by_name(server):
    catalog = universal.Catalog.from_records(server.get("/universal/classes").json()["classes"])
    assert_named_right(slicer_segments(server), served_label_map(server), catalog)
    subset = slicer_segments(server, {"classes": "Stomach, liver, 4"})  # typed into the options table
    assert set(subset) == {"Stomach", "Liver", catalog[4].name}  # only the classes asked for become segments
    assert_named_right(subset, served_label_map(server, ["Stomach", "Liver", 4]), catalog)
    embedding = torch.randn(512, generator=torch.Generator().manual_seed(3)).tolist()
    assert server.post("/universal/classes", json={"name": "Appendix", "embedding": embedding}).status_code == 200
    grown = universal.Catalog.from_records(server.get("/universal/classes").json()["classes"])
    segments = slicer_segments(server)
    assert "Appendix" in segments
    assert_named_right(segments, served_label_map(server), grown)


def test_ohif_names_each_value_by_its_info_id_for_auto_segmentation_and_class_prompts(server):
    catalog = universal.Catalog.from_records(server.get("/universal/classes").json()["classes"])
    assert_named_right(ohif_segments(server), served_label_map(server), catalog)
    ticked = ["Liver", "Right Kidney", "Stomach"]  # the break: liver voxels showed as "Right Kidney"
    assert_named_right(ohif_segments(server, ticked), served_label_map(server, ticked), catalog)
