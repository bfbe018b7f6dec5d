"""Verified downloads from a loopback HTTP server."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading

import pytest

from universal.download import RemoteFile, resolve
from universal.errors import WeightsUnavailableError

PAYLOAD = b"weights" * 1000


class HubHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files; ``/resolve/<sha>/weights.bin`` redirects to the file publishing ``<sha>`` as
    ``X-Linked-Etag``, the way Hugging Face redirects a large file to its CDN."""

    def do_GET(self):
        if self.path.startswith("/resolve/"):
            self.send_response(302)
            self.send_header("Location", "/weights.bin")
            self.send_header("X-Linked-Etag", f'"{self.path.split("/")[2]}"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    (served / "weights.bin").write_bytes(PAYLOAD)
    handler = functools.partial(HubHandler, directory=str(served))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def remote(url: str, sha256: str) -> RemoteFile:
    return RemoteFile("test weights", f"{url}/weights.bin", "test/weights.bin", sha256=sha256, env="TEST_WEIGHTS")


def test_download_verifies_and_caches(server, monkeypatch):
    monkeypatch.delenv("UNIVERSAL_OFFLINE")
    good = hashlib.sha256(PAYLOAD).hexdigest()
    path = resolve(remote(server, good), progress=False)
    assert path.read_bytes() == PAYLOAD
    assert resolve(remote("http://127.0.0.1:1", good), progress=False) == path  # served from the cache


def test_published_checksum_verifies_unpinned_files(server, monkeypatch, caplog):
    monkeypatch.delenv("UNIVERSAL_OFFLINE")
    good, bad = hashlib.sha256(PAYLOAD).hexdigest(), "ab" * 32
    unpinned = RemoteFile("hub weights", f"{server}/resolve/{bad}/weights.bin", "hub/weights.bin")
    with pytest.raises(WeightsUnavailableError, match=f"expected {bad}; the file was not kept"):
        resolve(unpinned, progress=False)
    unpinned = RemoteFile("hub weights", f"{server}/resolve/{good}/weights.bin", "hub/weights.bin")
    assert resolve(unpinned, progress=False).read_bytes() == PAYLOAD
    plain = RemoteFile("plain weights", f"{server}/weights.bin", "plain/weights.bin")
    with caplog.at_level("WARNING", logger="universal.download"):
        assert resolve(plain, progress=False).read_bytes() == PAYLOAD
    assert f"no published checksum; SHA-256 of the download is {good}" in caplog.text


def test_checksum_mismatch_keeps_nothing(server, monkeypatch):
    monkeypatch.delenv("UNIVERSAL_OFFLINE")
    with pytest.raises(WeightsUnavailableError, match=r"has SHA-256 .* expected 0000"):
        resolve(remote(server, "0000"), progress=False)
    from universal.download import cache_dir

    assert not any((cache_dir() / "test").iterdir())


def test_unreachable_server_names_the_fix(monkeypatch):
    monkeypatch.delenv("UNIVERSAL_OFFLINE")
    with pytest.raises(WeightsUnavailableError, match=r"download failed .* set TEST_WEIGHTS=PATH"):
        resolve(remote("http://127.0.0.1:1", "0"), progress=False)


def test_environment_override(tmp_path, monkeypatch):
    local = tmp_path / "mine.bin"
    local.write_bytes(b"x")
    monkeypatch.setenv("TEST_WEIGHTS", str(local))
    assert resolve(remote("http://127.0.0.1:1", "0")) == local
