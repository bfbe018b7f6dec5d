"""The app's settings as the served model's and the team's."""

from __future__ import annotations

import sys

import pytest
from app_server import APP

sys.path.insert(0, str(APP))
from lib.conf import AppConf
from lib.state import AppState


def test_the_app_serves_the_default_backbone(tmp_path):
    from universal.nets.registry import DEFAULT_BACKBONE

    assert AppConf().backbone == AppConf.parse({}).backbone == DEFAULT_BACKBONE
    state = AppState(tmp_path / "app", AppConf(model_dir=str(tmp_path / "model"), download=False), tmp_path / "team")
    assert state.backbone == DEFAULT_BACKBONE and state.store.folder == tmp_path / "model" and not state.ready
    assert state.team.folder == tmp_path / "team"
    moved = AppState(tmp_path / "app", AppConf(model_dir=str(tmp_path / "model"), team_dir=str(tmp_path / "elsewhere")),
                     tmp_path / "team")
    assert moved.team.folder == tmp_path / "elsewhere"  # --conf team_dir


def test_prelabel_is_auto_true_or_false():
    assert AppConf.parse({}).prelabel == "auto" and AppConf.parse({"prelabel": "TRUE"}).prelabel == "true"
    assert AppConf.parse({"prelabel": "0"}).prelabel == "false"
    with pytest.raises(ValueError, match="prelabel"):
        AppConf.parse({"prelabel": "sometimes"})
    with pytest.raises(ValueError, match="prelabel_cache_mb"):
        AppConf.parse({"prelabel_cache_mb": "-1"})
