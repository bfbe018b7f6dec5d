"""A MONAI Label server with the Universal Model app, started on loopback for the app tests.

:func:`start_server` copies ``apps/universal`` (so the server's model folder and logs stay out of the
repository), starts ``monailabel start_server`` in its own process group on a free port, and waits
for ``/info``; :meth:`Server.stop` kills the group (the server and any training or scoring process).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

REPOSITORY = Path(__file__).resolve().parents[1]
APP = REPOSITORY / "apps" / "universal"


def wait_until(condition, timeout: float, what: str, interval: float = 0.5):
    """``condition()``'s first truthy value, asked every ``interval`` seconds; an AssertionError naming
    ``what`` when none comes within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        found = condition()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not seen within {timeout:g} s")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Server:
    url: str
    app_dir: Path
    studies: Path
    log: Path
    process: subprocess.Popen
    headers: dict[str, str] | None = None  # sent with every request (a bearer token)

    def request(self, method: str, path: str, headers: dict | None = None, **kwargs) -> requests.Response:
        headers = {**(self.headers or {}), **(headers or {})}
        return requests.request(method, self.url + path, timeout=120, headers=headers, **kwargs)

    def get(self, path: str, **kwargs) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs) -> requests.Response:
        return self.request("PUT", path, **kwargs)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def train(self, params: dict, timeout: float = 240) -> dict:
        """Start ``POST /train/universal`` with ``params`` and wait for it to end; its last status."""
        return self.run_task("/train/universal", "/train/", timeout, json=params)

    def batch_infer(self, timeout: float = 240, **kwargs) -> dict:
        """Start ``POST /batch/infer/universal`` (``kwargs`` as for requests) and wait for it to end;
        its last status."""
        return self.run_task("/batch/infer/universal", "/batch/infer", timeout, **kwargs)

    def run_task(self, start: str, status_path: str, timeout: float, **kwargs) -> dict:
        """POST ``start``, then poll ``status_path`` until MONAI Label reports the task ended."""
        started = self.post(start, **kwargs)
        assert started.status_code == 200, started.text
        deadline, status = time.monotonic() + timeout, {}
        while time.monotonic() < deadline:
            status = self.get(status_path).json()
            if status["status"] not in ("SUBMITTED", "RUNNING"):
                break
            time.sleep(1)
        return status

    def kill(self) -> None:
        """``kill -9`` of the server and every process it started, as a crash or the OOM killer does."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


def start_server(root: Path, studies: Path, conf: dict[str, str], env: dict[str, str], timeout: float = 150,
                 headers: dict[str, str] | None = None) -> Server:
    """Start the app on ``studies`` with ``--conf`` pairs ``conf`` and extra environment ``env``;
    ``headers`` go with every request the :class:`Server` sends.

    Each process computes on one thread: the server, its training process and the tests share a
    couple of cores, where threads that wait for each other cost more than they bring."""
    app_dir = root / "app"
    shutil.copytree(APP, app_dir, ignore=shutil.ignore_patterns("model", "logs", "bin", "__pycache__"),
                    dirs_exist_ok=True)  # a restart on the same folder
    port = free_port()
    command = [sys.executable, "-m", "monailabel.main", "start_server", "--app", str(app_dir), "--studies",
               str(studies), "--host", "127.0.0.1", "--port", str(port), "--conf", "models", "universal"]
    for key, value in {"prelabel": "false", **conf}.items():  # background work only where a test asks for it
        command += ["--conf", key, value]
    environment = {**os.environ, "MONAI_LABEL_TRACKING_ENABLED": "false", "MONAI_LABEL_AUTO_UPDATE_SCORING": "false",
                   "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **env}
    log = root / "server.log"
    with log.open("a") as stream:
        process = subprocess.Popen(command, stdout=stream, stderr=subprocess.STDOUT, env=environment,
                                   cwd=root, start_new_session=True)
    server = Server(f"http://127.0.0.1:{port}", app_dir, studies, log, process, headers)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited ({process.returncode}):\n{server.log_text()[-4000:]}")
        with contextlib.suppress(requests.ConnectionError):
            if requests.get(server.url + "/info/", timeout=30, headers=headers).status_code == 200:
                return server
        time.sleep(0.5)
    server.stop()
    raise RuntimeError(f"the server did not answer within {timeout} s:\n{server.log_text()[-4000:]}")
