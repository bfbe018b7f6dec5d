"""The served model: which weights are in use (a given file until the folder publishes one), the
classes they name without loading them, the model loaded per device and reloaded when the file
changes, and the status while the release downloads (a loopback host stands in for Hugging Face)."""

from __future__ import annotations

import hashlib
import http.server
import threading

import pytest
import torch
from tiny import tiny_model

import universal
from universal.serving.model_store import ModelStore
from universal.serving.served import ModelNotReady, ServedModel

RELEASED = "clip_driven_universal_unet.pth"


def test_without_weights_it_is_not_ready_and_says_where_the_file_goes(tmp_path):
    served = ServedModel(ModelStore(tmp_path / "model"))
    assert not served.refresh() and not served.ready
    assert f"put {RELEASED} into {tmp_path / 'model'}/" in served.status
    with pytest.raises(ModelNotReady, match=RELEASED):
        served.require_source()
    assert served.catalog() == universal.Catalog.default()  # the released classes, for /info
    assert served.describe()["ready"] is False and served.model_key() == "none"


def test_given_weights_serve_until_the_folder_publishes_a_model_of_its_own(tmp_path):
    given = universal.save_model(tiny_model(["Liver", "Spleen"]), tmp_path / "given.pt")
    served = ServedModel(ModelStore(tmp_path / "model"), weights=str(given))
    assert served.refresh() and served.source == given and served.version() is None
    assert served.catalog().names == ["Liver", "Spleen"]  # read from the file, no model loaded
    model, version = served.serving("cpu")
    assert version is None and model.catalog.names == ["Liver", "Spleen"]
    assert served.model("cpu") is model  # loaded once

    another = ModelStore(tmp_path / "model")  # a training process publishes into the same folder
    another.publish(tiny_model(["Liver", "Spleen", "Stomach"]), "fine-tuned")
    assert served.catalog().names == ["Liver", "Spleen", "Stomach"]  # from catalog.yaml, followed at once
    assert served.source == another.current_path and served.version() == 1 and served.model_key() == "v1"
    model, version = served.serving("cpu")
    assert version == 1 and model.num_classes == 3


def test_a_published_model_is_reloaded_when_its_file_changes_and_names_its_own_version(tmp_path):
    store = ModelStore(tmp_path / "model")
    store.publish(tiny_model(["Liver"]), "first")
    served = ServedModel(store)
    assert served.refresh()
    first, version = served.serving("cpu")
    assert version == 1
    info = served.add_class("Appendix", embedding=[0.5] * 512)
    assert info.id == 2 and served.catalog().names == ["Liver", "Appendix"] and served.version() == 2
    second, version = served.serving("cpu")
    assert second is not first and version == 2 and second.catalog.names == ["Liver", "Appendix"]


def test_a_catalogue_comes_from_the_folder_the_file_or_the_release(tmp_path):
    store = ModelStore(tmp_path / "model")
    assert store.catalog_of(None) == universal.Catalog.default()
    placed = universal.save_model(tiny_model(["Liver"]), tmp_path / "model" / RELEASED)
    assert store.catalog_of(placed).names == ["Liver"]
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    assert store.catalog_of(broken) == universal.Catalog.default()
    store.publish(tiny_model(["Spleen"]), "first")
    assert store.catalog_of(store.current_path).names == ["Spleen"] == store.catalog_of(None).names
    store.catalog_path.unlink()
    assert store.catalog_of(store.current_path).names == ["Spleen"]  # the file's own


class SlowHub(http.server.BaseHTTPRequestHandler):
    """Answers the released U-Net's URL as the hub does, but only once ``release`` is set."""

    body = b""
    asked = threading.Event()
    release = threading.Event()

    def do_GET(self):
        self.asked.set()
        self.release.wait(60)
        self.send_response(200)
        self.send_header("X-Linked-Etag", f'"{hashlib.sha256(self.body).hexdigest()}"')
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


def test_a_second_refresh_during_a_download_keeps_the_status(tmp_path, monkeypatch):
    released = tmp_path / "released.pth"
    torch.save({"net": {f"module.{k}": v for k, v in universal.UniversalModel("unet", width=4).state_dict().items()}},
               released)
    handler = type("Hub", (SlowHub,), {"body": released.read_bytes(), "asked": threading.Event(),
                                       "release": threading.Event()})
    hub = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=hub.serve_forever, daemon=True).start()
    monkeypatch.delenv("UNIVERSAL_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{hub.server_address[1]}")
    try:
        served = ServedModel(ModelStore(tmp_path / "model"))
        assert not served.ready and not served.downloading
        downloader = threading.Thread(target=served.refresh, kwargs={"download": True})
        downloader.start()
        assert handler.asked.wait(30)
        others = [threading.Thread(target=served.refresh) for _ in range(3)]  # refreshes that do not download
        for other in others:
            other.start()
        for other in others:
            other.join(30)
        described = served.describe()  # /info looks for weights too
        assert described["status"] == "downloading the released unet weights" and not described["ready"]
        assert served.downloading
        handler.release.set()
        downloader.join(60)
        assert served.ready and not served.downloading and served.status == "ready"
        assert served.model().width == 4
    finally:
        handler.release.set()
        hub.shutdown()
        hub.server_close()


def test_an_unusable_current_model_falls_back_to_the_newest_whole_kept_version(tmp_path):
    store = ModelStore(tmp_path / "model")
    store.publish(tiny_model(["Liver"]), "first")
    store.publish(tiny_model(["Liver", "Spleen"]), "second")
    store.current_path.unlink()  # its own file again, not a link of version 2's
    store.current_path.write_bytes(store.version_path(2).read_bytes()[:5000])  # truncated
    store.version_path(2).write_bytes(b"")  # and version 2 lost too
    served = ServedModel(store)
    assert served.refresh() and served.source == store.version_path(1) and served.version() == 1
    described = served.describe()
    assert described["ready"] and "the current model cannot be used" in described["warning"]
    assert "serving kept version 1" in described["warning"]
    model, version = served.serving("cpu")
    assert version == 1 and model.catalog.names == ["Liver"] == served.catalog().names
    store.restore(1)  # the lead restores: the warning goes
    assert served.refresh() and served.source == store.current_path and served.describe()["warning"] is None


def test_the_demo_model_serves_only_until_the_released_weights_are_there(tmp_path):
    demo = tmp_path / "demo.pt"
    model = tiny_model(["Liver"])
    universal.save_model(model, demo, provenance={"demo": True})
    served = ServedModel(ModelStore(tmp_path / "model"), demo=demo)
    assert served.refresh() and served.source == demo and served.demo
    assert "synthetic images only" in served.describe()["warning"]
    served.add_class("Appendix", embedding=[0.5] * 512)  # a model grown from the demo is demo too
    assert served.refresh() and served.source == served.store.current_path and served.demo
    released = universal.save_model(tiny_model(["Liver", "Spleen"]), tmp_path / "model" / RELEASED)
    assert served.refresh() and served.source == released and not served.demo
    assert served.describe()["warning"] is None and served.catalog().names == ["Liver", "Spleen"]
