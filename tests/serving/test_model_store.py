"""The model folder: where the served weights are looked for, published versions, restoring one."""

from __future__ import annotations

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
