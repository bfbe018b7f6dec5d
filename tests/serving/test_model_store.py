"""The model folder: where the served weights are looked for, published versions, restoring one."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import pytest
import torch
from conftest import mounted
from tiny import tiny_model

import universal
from universal.errors import DiskFullError, ReadOnlyError, UniversalError, WeightsUnavailableError
from universal.serving import model_store
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


def killed(*args, **kwargs):
    raise SystemExit("killed")


def killed_after(function, calls: int):
    """``function`` that goes through ``calls`` times; at the next call the process is "killed"."""
    done = [0]

    def run(*args, **kwargs):
        if done[0] >= calls:
            killed()
        done[0] += 1
        return function(*args, **kwargs)

    return run


def then_killed(function):
    """``function``, and the process "killed" as soon as it returns."""
    def run(*args, **kwargs):
        function(*args, **kwargs)
        killed()

    return run


@pytest.mark.parametrize("killed_at", ["version file", "catalogue", "staging", "moving into place"])
def test_a_publication_killed_part_way_is_rolled_back(tmp_path, monkeypatch, killed_at):
    """A process killed part-way leaves the folder as before the publication, once recovered: the
    current model, its classes and the index agree, and the next version is whole."""
    store = ModelStore(tmp_path / "model")
    store.publish(tiny_model(["Liver", "Spleen"]), "first")
    before = store.current_path.read_bytes(), store.catalog_path.read_text(), store.index()
    (store.folder / ".universal.pt.abc.part").write_bytes(b"half")  # an interrupted atomic write
    step = {"version file": (model_store, "save_model", then_killed(model_store.save_model)),
            "catalogue": (universal.Catalog, "save_yaml", killed),
            "staging": (model_store, "_link_or_copy", killed_after(model_store._link_or_copy, 1)),
            # the version file's and catalogue's own atomic writes, then the catalogue moved into place
            "moving into place": (model_store.os, "replace", killed_after(os.replace, 3))}[killed_at]
    monkeypatch.setattr(*step)
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


def fill(disk: Path, leave: int = 0) -> Path:
    """A file that takes all the free space of ``disk`` but ``leave`` bytes."""
    filler = disk / f"filler{len(list(disk.glob('filler*')))}"
    with contextlib.suppress(OSError), filler.open("wb") as stream:
        free = shutil.disk_usage(disk).free - leave
        while free > 0:
            stream.write(bytes(min(free, 1 << 16)))
            free -= 1 << 16
    return filler


def test_a_full_disk_publishes_nothing_and_recovery_needs_no_free_space(tmp_path, monkeypatch):
    """On a disk without room for the next model, its publication fails with a clear error and changes
    nothing; a publication killed after its version file, on a disk then full, is rolled back."""
    with mounted(tmp_path / "disk", "tmpfs", "size=8m") as disk:
        store = ModelStore(disk / "model")
        store.publish(tiny_model(["Liver", "Spleen"]), "first")
        before = store.current_path.read_bytes(), store.catalog_path.read_text(), store.index()
        filler = fill(disk, leave=1 << 20)  # 1 MB free: half a model
        with pytest.raises(DiskFullError, match="model version 2 was not published: the disk is full"):
            store.publish(tiny_model(["Liver", "Spleen", "Stomach"]), "too big")
        assert (store.current_path.read_bytes(), store.catalog_path.read_text(), store.index()) == before
        assert sorted(p.name for p in store.folder.rglob("*") if p.is_file()) == sorted(
            [".lock", "catalog.yaml", "universal.pt", "versions.json", "v0001.pt", "v0001.yaml"])
        filler.unlink()
        monkeypatch.setattr(model_store, "_link_or_copy", killed)
        with pytest.raises(SystemExit):
            store.publish(tiny_model(["Liver"]), "killed after its version file")
        monkeypatch.undo()
        fill(disk)
        assert shutil.disk_usage(disk).free < 1 << 16
        assert any("rolled back" in line for line in store.recover())  # on a full disk
        assert (store.current_path.read_bytes(), store.catalog_path.read_text(), store.index()) == before


def test_a_model_that_is_not_finite_is_never_published(tmp_path):
    store = ModelStore(tmp_path / "model")
    store.publish(tiny_model(["Liver"]), "first")
    poisoned = tiny_model(["Liver"])
    with torch.no_grad():
        poisoned.backbone.down_tr64.ops[0].conv1.weight[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(UniversalError, match=r"NaN or infinite values .*the current model stays"):
        store.publish(poisoned, "poisoned")
    assert store.index()["current"] == 1 and len(store.versions()) == 1
    with pytest.raises(UniversalError, match="finite numbers only"):
        store.add_class(store.current_path, "Appendix", embedding=[float("nan")] * 512)
    with pytest.raises(UniversalError, match="finite numbers only"):  # overflows float32
        store.add_class(store.current_path, "Appendix", embedding=[1e39] * 512)
    assert store.index()["current"] == 1


def test_a_damaged_version_is_not_restored(tmp_path):
    store = ModelStore(tmp_path / "model")
    store.publish(tiny_model(["Liver"]), "first")
    store.publish(tiny_model(["Liver", "Spleen"]), "second")
    store.version_path(1).write_bytes(store.version_path(1).read_bytes()[:1000])  # truncated
    with pytest.raises(UniversalError, match=r"version 1 cannot be restored: .*truncated"):
        store.restore(1)
    assert store.index()["current"] == 2 and list(store.intact_versions()) == [2]


def test_a_read_only_folder_is_served_as_it_is(tmp_path):
    store = ModelStore(tmp_path / "model")
    store.publish(tiny_model(["Liver"]), "first")
    with mounted(store.folder, "bind", "ro"):
        assert not store.writable() and store.recover() == []
        assert store.resolve_weights() == store.current_path
        with pytest.raises(ReadOnlyError, match=r"model folder .* is read-only"):
            store.publish(tiny_model(["Liver"]), "refused")
        with pytest.raises(ReadOnlyError, match="cannot add the class 'Appendix'"):
            store.add_class(store.current_path, "Appendix", embedding=[0.5] * 512)


def test_before_the_first_publication_a_model_placed_by_hand_stays_current(tmp_path, monkeypatch):
    store = ModelStore(tmp_path / "model")
    content = universal.save_model(tiny_model(["Liver"]), store.current_path).read_bytes()

    monkeypatch.setattr(model_store, "_link_or_copy", killed)  # after the version file and its catalogue
    with pytest.raises(SystemExit):
        store.publish(tiny_model(["Liver", "Spleen"]), "interrupted")
    monkeypatch.undo()
    assert store.recover()
    assert store.current_path.read_bytes() == content and not store.version_path(1).exists()
    assert not store.catalog_path.exists() and store.catalog_of(store.current_path).names == ["Liver"]  # as before


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
