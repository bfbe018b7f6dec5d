"""The app's weights status under concurrent requests: while the released weights download, any other
look for weights leaves the status "downloading" (a loopback host stands in for Hugging Face)."""

from __future__ import annotations

import hashlib
import http.server
import sys
import threading

import torch
from app_server import APP

import universal

sys.path.insert(0, str(APP))
from lib.conf import AppConf
from lib.state import AppState


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
        state = AppState(tmp_path / "app", AppConf(model_dir=str(tmp_path / "model")))
        assert not state.ready and not state.downloading
        downloader = threading.Thread(target=state.refresh, kwargs={"download": True})
        downloader.start()
        assert handler.asked.wait(30)
        others = [threading.Thread(target=state.refresh) for _ in range(3)]  # refreshes that do not download
        for other in others:
            other.start()
        for other in others:
            other.join(30)
        described = state.describe()  # /info looks for weights too
        assert described["status"] == "downloading the released unet weights" and not described["ready"]
        assert state.downloading
        handler.release.set()
        downloader.join(60)
        assert state.ready and not state.downloading and state.status == "ready"
        assert state.model().width == 4
    finally:
        handler.release.set()
        hub.shutdown()
        hub.server_close()


def test_the_app_serves_the_default_backbone():
    from universal.nets.registry import DEFAULT_BACKBONE

    assert AppConf().backbone == AppConf.parse({}).backbone == DEFAULT_BACKBONE
