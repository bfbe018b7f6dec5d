"""The model folder: where the served weights are looked for, published versions, restoring one."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from tiny import tiny_model

import universal
from universal.errors import WeightsUnavailableError
from universal.serving.model_store import ModelStore

RELEASED = "clip_driven_universal_unet.pth"


def test_weights_are_looked_for_in_the_model_folder_then_the_given_file(tmp_path):
    store = ModelStore(tmp_path / "model")
    with pytest.raises(WeightsUnavailableError, match=f"put {RELEASED} into"):
        store.resolve_weights(download=True)  # offline in tests: nothing is downloaded
    given = universal.save_model(tiny_model(), tmp_path / "given.pt")
    assert store.resolve_weights(given) == given
    (tmp_path / "model").mkdir()
    placed = Path(shutil.copy(given, tmp_path / "model" / RELEASED))
    assert store.resolve_weights(given) == placed  # a released file placed in the folder comes first
    record = store.publish(universal.load_model(given), "test")
    assert store.resolve_weights(given) == store.current_path and record["version"] == 1
    store.publish(universal.load_model(given), "second")
    store.restore(1)
    assert store.index()["current"] == 1 and len(store.versions()) == 2


@pytest.mark.parametrize("killed_before", ["catalogue", "model", "index"])
def test_a_publication_killed_part_way_is_rolled_back(tmp_path, monkeypatch, killed_before):
    """A process killed after the version file is written leaves the folder as before it, once
    recovered: the current model, its classes and the index agree, and the next version is whole."""
    store = ModelStore(tmp_path / "model")
    store.publish(tiny_model(["Liver", "Spleen"]), "first")
    before = store.current_path.read_bytes(), store.catalog_path.read_text(), store.index()
    step = {"catalogue": (universal.Catalog, "save_yaml"), "model": (ModelStore, "_make_current"),
            "index": (ModelStore, "_write_index")}[killed_before]
    (store.folder / ".universal.pt.abc.part").write_bytes(b"half")  # an interrupted atomic write

    def killed(*args, **kwargs):
        raise SystemExit("killed")

    monkeypatch.setattr(*step, killed)
    with pytest.raises(SystemExit):
        store.publish(tiny_model(["Liver", "Spleen", "Stomach"]), "interrupted")
    monkeypatch.undo()
    undone = ModelStore(store.folder).recover()
    assert any("rolled back" in line for line in undone) and any(".part" in line for line in undone)
    assert (store.current_path.read_bytes(), store.catalog_path.read_text(), store.index()) == before
    assert not list(store.folder.glob(".*.part")) and not store.version_path(2).exists()
    assert universal.load_model(store.current_path).catalog.names == ["Liver", "Spleen"]
    assert ModelStore(store.folder).recover() == []  # nothing left to undo
    assert store.publish(tiny_model(["Liver"]), "next")["version"] == 2


def test_before_the_first_publication_a_model_placed_by_hand_stays_current(tmp_path, monkeypatch):
    store = ModelStore(tmp_path / "model")
    content = universal.save_model(tiny_model(["Liver"]), store.current_path).read_bytes()

    def killed(*args, **kwargs):
        raise SystemExit("killed")

    monkeypatch.setattr(ModelStore, "_make_current", killed)  # after the version file and the catalogue
    with pytest.raises(SystemExit):
        store.publish(tiny_model(["Liver", "Spleen"]), "interrupted")
    monkeypatch.undo()
    assert store.recover()
    assert store.current_path.read_bytes() == content and not store.version_path(1).exists()
    assert universal.Catalog.from_yaml(store.catalog_path).names == ["Liver"]


def test_a_training_note_becomes_its_failure_or_is_reported_lost(tmp_path):
    store = ModelStore(tmp_path / "model")
    store.folder.mkdir()
    store.training.write({"version": 3})
    store.training.running({"start_ts": 12})
    assert store.training.read()["running"]["pid"] == os.getpid() and store.recover() == []  # alive: no report
    store.training.failed("no annotated image")
    assert store.training.read() == {"version": 3, "failed": {"start_ts": 12, "reason": "no annotated image"}}
    store.training.write({"version": 3, "running": {"pid": 2**22 + 1, "start_ts": 13}})  # no such process
    assert any("reported as failed" in line for line in store.recover())
    stats = store.training.read()
    assert stats["interrupted"]["status"] == "FAILED" and "running" not in stats
