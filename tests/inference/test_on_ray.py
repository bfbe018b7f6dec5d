"""Segmenting many scans on a local Ray instance (2 CPUs, the tiny model, ten phantoms and a corrupt
file): the same files as one process, bit for bit, even when a network worker is killed mid-case;
a case whose worker keeps dying fails alone; a second run skips what is done."""

from __future__ import annotations

import csv
import json
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from conftest import missing_in_ci
from tiny import PHANTOM, tiny_model

import universal
from universal.errors import UniversalError
from universal.inference.on_ray import RETRIES
from universal.synth import make_phantom, save_phantom

CASES = 10


@pytest.fixture(scope="module")
def ray():
    try:
        import ray
    except ImportError:
        missing_in_ci("Ray (pip install 'universal-model[ray]')")
    ray.init(num_cpus=2, include_dashboard=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def scans(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("scans")
    for seed in range(CASES):
        save_phantom(make_phantom(seed, **PHANTOM), folder / f"case{seed:02d}.nii.gz")
    (folder / "corrupt.nii.gz").write_bytes(b"not an image")
    return folder


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return universal.save_model(tiny_model(), tmp_path_factory.mktemp("model") / "tiny.pt")


@pytest.fixture(scope="module")
def local_run(scans, model, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("local")
    universal.segment(scans, output, model=model, masks=True, progress=False)
    return output


class WorkerKiller(threading.Thread):
    """Kills network workers (SIGKILL) while they run a case: Ray titles a worker's process
    ``ray::NetworkWorker.predict`` while it runs that method."""

    def __init__(self, kills: int):
        super().__init__(daemon=True)
        self.wanted, self.killed = kills, []

    def run(self) -> None:
        while len(self.killed) < self.wanted:
            for process in psutil.process_iter(["cmdline"]):
                if " ".join(process.info["cmdline"] or []).startswith("ray::NetworkWorker.predict"):
                    process.kill()
                    self.killed.append(process.pid)
            time.sleep(0.005)


def summary(output: Path) -> dict[str, dict]:
    with (output / "summary.csv").open() as stream:
        return {row["case"]: row for row in csv.DictReader(stream)}


def without_timings(path: Path) -> dict:
    report = json.loads(path.read_text())
    report.pop("timings_s")
    return report


def test_a_killed_worker_costs_nothing_and_the_files_equal_one_process(ray, scans, model, local_run, tmp_path):
    killer = WorkerKiller(1)
    killer.start()
    outcomes = universal.segment(scans, tmp_path, model=model, masks=True, progress=False, engine="ray")
    killer.join(timeout=1)
    assert len(killer.killed) == 1  # a worker died while it ran a case
    rows, names = summary(tmp_path), sorted(["corrupt", *(f"case{seed:02d}" for seed in range(CASES))])
    assert [o.name for o in outcomes] == list(rows) == names
    assert rows["corrupt"]["status"] == "failed" and "cannot be read as a CT volume" in rows["corrupt"]["error"]
    assert all(rows[f"case{seed:02d}"]["status"] == "done" for seed in range(CASES))
    assert summary(local_run).keys() == rows.keys()
    for seed in range(CASES):
        here, there = local_run / f"case{seed:02d}", tmp_path / f"case{seed:02d}"
        files = sorted(p.relative_to(here) for p in here.rglob("*.nii.gz"))
        assert files == sorted(p.relative_to(there) for p in there.rglob("*.nii.gz")) and len(files) == 6
        for file in files:
            assert (here / file).read_bytes() == (there / file).read_bytes(), file
        assert without_timings(here / "report.json") == without_timings(there / "report.json")

    written = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.nii.gz")}
    again = universal.segment(scans, tmp_path, model=model, masks=True, progress=False, engine="ray", resume=True)
    assert {o.name: o.status for o in again} == {**dict.fromkeys(rows, "skipped"), "corrupt": "failed"}
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.nii.gz")} == written


def test_a_case_whose_worker_keeps_dying_fails_alone(ray, scans, model, tmp_path):
    killer = WorkerKiller(RETRIES + 1)  # one worker runs one case at a time: its tries die one after another
    killer.start()
    outcomes = universal.segment(scans, tmp_path, model=model, progress=False, engine="ray", workers=1)
    killer.join(timeout=1)
    failed = [o for o in outcomes if o.status == "failed" and o.name != "corrupt"]
    assert len(killer.killed) == RETRIES + 1 and len(failed) == 1
    assert f"its worker stopped {RETRIES + 1} times" in failed[0].error
    assert sum(o.status == "done" for o in outcomes) == CASES - 1


def test_without_ray_the_engine_says_how_to_install_it(scans, model, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(UniversalError, match=r"pip install 'universal-model\[ray\]'"):
        universal.segment(scans, tmp_path, model=model, engine="ray")
