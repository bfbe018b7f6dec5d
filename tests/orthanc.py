"""Orthanc (Debian's ``orthanc`` and ``orthanc-dicomweb`` packages) as a PACS on loopback for the
tests: its own configuration and storage in a temporary folder, a free port, stopped afterwards."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import requests
from app_server import free_port

DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


@dataclass
class Orthanc:
    url: str
    process: subprocess.Popen

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    def client(self):
        from dicomweb_client.api import DICOMwebClient

        return DICOMwebClient(url=self.dicomweb)


@contextlib.contextmanager
def running_orthanc(folder: Path) -> Iterator[Orthanc]:
    """Orthanc with DICOMweb at ``/dicom-web`` (keys of Orthanc's own orthanc.json and dicomweb.json,
    as Debian installs them in /etc/orthanc/); skipped with the reason when it is not installed, outside CI."""
    executable = shutil.which("Orthanc")
    if executable is None or not DICOMWEB_PLUGIN.is_file():
        from conftest import missing_in_ci

        missing_in_ci("Orthanc with its DICOMweb plugin (apt-get install orthanc orthanc-dicomweb)")
    port = free_port()
    config = {"Name": "tests", "StorageDirectory": str(folder / "db"), "IndexDirectory": str(folder / "db"),
              "HttpPort": port, "DicomServerEnabled": False, "AuthenticationEnabled": False,
              "RemoteAccessAllowed": False, "Plugins": [str(DICOMWEB_PLUGIN)],
              "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}}
    (folder / "orthanc.json").write_text(json.dumps(config))
    log = (folder / "orthanc.log").open("w")
    process = subprocess.Popen([executable, str(folder / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(f"{url}/system", timeout=5).ok:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Orthanc did not start:\n{(folder / 'orthanc.log').read_text()[-2000:]}")
            time.sleep(0.2)
        yield Orthanc(url, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()

