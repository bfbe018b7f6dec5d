"""Verified downloads from a loopback HTTP server that behaves like each real host: Hugging Face's
``resolve/main`` (a 302 to its CDN whose ``X-Linked-Etag`` holds the file's SHA-256), a plain host
with a pinned digest, a missing file, a body cut short and a wrong digest. Nothing unverified is kept."""

from __future__ import annotations

import hashlib
import http.server
import threading
from typing import ClassVar

import pytest
import torch

import universal
from universal.errors import WeightsUnavailableError
from universal.io.download import RemoteFile, cache_dir, resolve
from universal.nets.checkpoint import RELEASED_CHECKPOINTS
from universal.nets.text import CLIP_WEIGHTS

PAYLOAD = b"weights" * 1000
RELEASE_PATH = "/ljwztc/CLIP-Driven-Universal-Model/resolve/main/"


class HostHandler(http.server.BaseHTTPRequestHandler):
    """``files`` by name. ``/ljwztc/.../resolve/main/NAME`` answers as the hub does: 302 to
    ``/cdn/NAME`` with the SHA-256 in ``X-Linked-Etag`` (``published`` overrides it); ``/cdn/NAME`` and
    ``/plain/NAME`` serve the file; ``/short/NAME`` promises the whole file and sends half."""

    files: ClassVar[dict[str, bytes]] = {}
    published: ClassVar[dict[str, str]] = {}
    requests: ClassVar[list[str]] = []

    def do_GET(self):
        self.requests.append(self.path)
        prefix, _, name = self.path.rpartition("/")
        body = self.files.get(name)
        if body is None:
            self._answer(404, b"Entry not found")
        elif prefix + "/" == RELEASE_PATH:
            self.send_response(302)
            self.send_header("Location", f"/cdn/{name}")
            self.send_header("X-Linked-Etag", f'"{self.published.get(name, hashlib.sha256(body).hexdigest())}"')
            self.send_header("X-Linked-Size", str(len(body)))
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif prefix == "/short":
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
        elif prefix in ("/cdn", "/plain"):
            self._answer(200, body, etag='"not-a-sha256"')
        else:
            self._answer(404, b"Entry not found")

    def _answer(self, status: int, body: bytes, etag: str | None = None):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        if etag:
            self.send_header("ETag", etag)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def host(monkeypatch):
    """The server's URL; its files, published digests and the paths it was asked for are the handler's."""
    monkeypatch.delenv("UNIVERSAL_OFFLINE")
    handler = type("Handler", (HostHandler,), {"files": {}, "published": {}, "requests": []})  # per test
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.handler = handler
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def remote(url: str, sha256: str | None = None) -> RemoteFile:
    return RemoteFile("test weights", url, "test/weights.bin", sha256=sha256, env="TEST_WEIGHTS")


def kept() -> list:
    folder = cache_dir() / "test"
    return sorted(folder.iterdir()) if folder.is_dir() else []


def test_released_weights_download_from_the_hub_verified_by_its_published_digest(host, monkeypatch, tmp_path):
    model = universal.UniversalModel("unet", width=4)
    released = tmp_path / "released.pth"
    torch.save({"net": {f"module.{k}": v for k, v in model.state_dict().items()}}, released)  # the released layout
    host.handler.files["clip_driven_universal_unet.pth"] = released.read_bytes()
    monkeypatch.setenv("HF_ENDPOINT", host.url)
    loaded = universal.load_model("unet")
    name = "clip_driven_universal_unet.pth"
    assert host.handler.requests == [RELEASE_PATH + name, f"/cdn/{name}"]  # the redirect to the CDN followed
    assert loaded.width == 4 and torch.equal(loaded.controller.weight, model.controller.weight)
    assert (cache_dir() / RELEASED_CHECKPOINTS["unet"].filename).read_bytes() == released.read_bytes()
    assert universal.load_model("unet").width == 4  # the second time from the cache
    assert len(host.handler.requests) == 2


def test_a_digest_the_hub_publishes_that_does_not_match_keeps_nothing(host):
    host.handler.files["weights.bin"] = PAYLOAD
    host.handler.published["weights.bin"] = "ab" * 32
    with pytest.raises(WeightsUnavailableError, match=f"expected {'ab' * 32}; the file was not kept"):
        resolve(remote(host.url + RELEASE_PATH + "weights.bin"), progress=False)
    assert kept() == []


def test_a_plain_host_is_verified_by_the_pinned_digest(host):
    host.handler.files["weights.bin"] = PAYLOAD
    path = resolve(remote(host.url + "/plain/weights.bin", hashlib.sha256(PAYLOAD).hexdigest()), progress=False)
    assert path.read_bytes() == PAYLOAD
    with pytest.raises(WeightsUnavailableError, match=r"has SHA-256 .* expected 0000"):
        resolve(RemoteFile("other", host.url + "/plain/weights.bin", "test/other.bin", sha256="0000"), progress=False)
    assert kept() == [path]


def test_a_file_no_digest_verifies_is_not_kept(host):
    host.handler.files["weights.bin"] = PAYLOAD
    with pytest.raises(WeightsUnavailableError, match=r"no pinned or published SHA-256 .* not kept"):
        resolve(remote(host.url + "/plain/weights.bin"), progress=False)
    assert kept() == []


def test_a_missing_file_names_the_fix(host):
    with pytest.raises(WeightsUnavailableError, match=r"download failed \(Not Found\); download .* set TEST_WEIGHTS"):
        resolve(remote(host.url + "/plain/weights.bin", "0"), progress=False)
    assert kept() == []


def test_a_body_cut_short_is_not_kept(host):
    host.handler.files["weights.bin"] = PAYLOAD
    with pytest.raises(WeightsUnavailableError, match=f"cut short \\({len(PAYLOAD) // 2} of {len(PAYLOAD)} bytes"):
        resolve(remote(host.url + "/short/weights.bin", hashlib.sha256(PAYLOAD).hexdigest()), progress=False)
    assert kept() == []


def test_unreachable_server_names_the_fix(monkeypatch):
    monkeypatch.delenv("UNIVERSAL_OFFLINE")
    with pytest.raises(WeightsUnavailableError, match=r"download failed .* set TEST_WEIGHTS=PATH"):
        resolve(remote("http://127.0.0.1:1/weights.bin", "0"), progress=False)


def test_environment_override(tmp_path, monkeypatch):
    local = tmp_path / "mine.bin"
    local.write_bytes(b"x")
    monkeypatch.setenv("TEST_WEIGHTS", str(local))
    assert resolve(remote("http://127.0.0.1:1/weights.bin", "0")) == local


def test_clip_weights_are_openais_file_with_its_digest():
    """OpenAI publishes ViT-B/32 in a folder named by its SHA-256; open_clip lists the same URL."""
    open_clip = pytest.importorskip("open_clip")
    assert CLIP_WEIGHTS.url == open_clip.pretrained.get_pretrained_url("ViT-B-32", "openai")
    assert CLIP_WEIGHTS.url.split("/")[-2] == CLIP_WEIGHTS.sha256
