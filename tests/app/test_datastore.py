"""The app's local datastore when the server dies mid-save: the label file and ``datastore_v2.json``
each change in one step, and the next start gives a new file the record that was being saved, so a
label and its record never disagree."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from app_server import APP

from universal.io.labels import write_label_file
from universal.synth import make_phantom, save_phantom

sys.path.insert(0, str(APP))
from lib.datastore import CheckedDatastore


def open_datastore(studies) -> CheckedDatastore:
    return CheckedDatastore(str(studies), extensions=["*.nii.gz"], auto_reload=False,
                            check_label=lambda image, label, info: info, on_final=lambda image, label, info: None,
                            max_voxels=10**7)


@pytest.fixture
def studies(tmp_path):
    folder = tmp_path / "studies"
    folder.mkdir()
    save_phantom(make_phantom(0, shape=(24, 24, 16), spacing=(16.0, 16.0, 30.0)), folder / "case0.nii.gz")
    return folder


def label(studies, tmp_path, value: int, name: str):
    path = tmp_path / f"{name}.nii.gz"
    data = np.zeros(nib.load(studies / "case0.nii.gz").shape, np.uint8)
    data[2:10, 2:10, 2:8] = value
    write_label_file(data, nib.load(studies / "case0.nii.gz").affine, path)
    return str(path), {"label_info": [{"name": name, "idx": value}]}


def save_args(made) -> tuple:
    """(file, tag, info) as ``save_label`` takes them after the image id."""
    return made[0], "final", made[1]


def recorded(datastore) -> tuple[bytes, list]:
    """The final label of case0 as stored, and the names its record gives."""
    with open(datastore.get_label_uri("case0", "final"), "rb") as stream:
        content = stream.read()
    return content, [entry["name"] for entry in datastore.get_label_info("case0", "final")["label_info"]]


@pytest.mark.parametrize("killed", ["before the index", "before the note is removed"])
def test_a_save_killed_after_its_file_is_in_place_is_completed_at_the_next_start(studies, tmp_path, monkeypatch,
                                                                                killed):
    datastore = open_datastore(studies)
    datastore.save_label("case0", *save_args(label(studies, tmp_path, 1, "Liver")))
    new_file, new_info = label(studies, tmp_path, 2, "Spleen")

    def die(*args, **kwargs):
        raise SystemExit("killed")

    if killed == "before the index":
        monkeypatch.setattr(CheckedDatastore, "_update_datastore_file", die)
    else:
        monkeypatch.setattr("pathlib.Path.unlink", die)
    with pytest.raises(SystemExit):
        datastore.save_label("case0", new_file, "final", new_info)
    monkeypatch.undo()
    json.loads((studies / "datastore_v2.json").read_text())
    content, names = recorded(open_datastore(studies))
    assert content == Path(new_file).read_bytes() and names == ["Spleen"]
    assert not [p.name for p in (studies / "labels" / "final").iterdir() if p.name.startswith(".")]


def test_a_save_killed_before_its_file_is_in_place_leaves_the_old_label_and_record(studies, tmp_path, monkeypatch):
    datastore = open_datastore(studies)
    old_file, old_info = label(studies, tmp_path, 1, "Liver")
    datastore.save_label("case0", old_file, "final", old_info)

    def die(*args, **kwargs):
        raise SystemExit("killed")

    monkeypatch.setattr("os.replace", die)  # the copy is written beside the label, never moved over it
    with pytest.raises(SystemExit):
        datastore.save_label("case0", *save_args(label(studies, tmp_path, 2, "Spleen")))
    monkeypatch.undo()
    content, names = recorded(open_datastore(studies))
    assert content == Path(old_file).read_bytes() and names == ["Liver"]
    assert not [p.name for p in (studies / "labels" / "final").iterdir() if p.name.startswith(".")]
