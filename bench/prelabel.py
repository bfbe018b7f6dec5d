"""An annotator's wait with pre-labelling in the background, on the real server driven as 3D Slicer's
MONAI Label module drives it (Project-MONAI/MONAILabel plugins/slicer/MONAILabel/MONAILabelLib/client.py:
``next_sample`` posts ``/activelearning/{strategy}`` with the parameters as JSON; ``infer`` posts
``/infer/{model}?image={id}`` with a ``params`` form field holding ``client_id``).

1. The server starts with ``--conf prelabel true`` on ``--images`` phantoms and pre-labels them while
   idle (the seconds each took are printed).
2. ``--requests`` times *Next Sample* → *Auto Segmentation* on the pre-labelled images: p50 and p95.
3. A new image arrives; its *Auto Segmentation* is timed cold (no pre-label yet).
4. While the background pre-labels another new image, an uploaded small image's ``/infer`` is timed,
   against the same request on an idle server: the delay, against the time of one window.
5. Each server's peak resident memory is printed when it stops: with pre-labelling, and without it
   (which segments the cold image only).

    python bench/prelabel.py                               # 2 clinical-size phantoms (512×512×200), U-Net
    python bench/prelabel.py --shape 256 256 100 --spacing 1.6 1.6 5   # a quick look
    python bench/prelabel.py --model run/model.pt          # a trained model instead

Without ``--model`` the weights are random (the released U-Net's architecture), so the label maps
are noise: the cached answer's size is then larger than a trained model's, which only lengthens its
transfer. The pre-labelled answers' times depend on the image and not on the model; the cold image's
and the pre-labelling's do.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
import torch

import universal
from universal.devices import cpu_description
from universal.synth import CLINICAL_SHAPE, CLINICAL_SPACING, make_phantom, save_phantom

APP = Path(__file__).resolve().parents[1] / "apps" / "universal"
SMALL = {"shape": (96, 96, 64), "spacing": (4.0, 4.0, 6.0)}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def server(root: Path, studies: Path, model_dir: Path, prelabel: str):
    """The app on loopback (MONAI Label's server in its own process group); yields its URL."""
    port = free_port()
    app = root / "app"
    shutil.copytree(APP, app, ignore=shutil.ignore_patterns("model", "logs", "__pycache__"), dirs_exist_ok=True)
    command = [sys.executable, "-m", "monailabel.main", "start_server", "--app", str(app), "--studies", str(studies),
               "--host", "127.0.0.1", "--port", str(port), "--conf", "models", "universal",
               "--conf", "model_dir", str(model_dir), "--conf", "prelabel", prelabel]
    env = {**os.environ, "MONAI_LABEL_TRACKING_ENABLED": "false", "MONAI_LABEL_AUTO_UPDATE_SCORING": "false",
           "UNIVERSAL_OFFLINE": "1"}
    with (root / f"server-{prelabel}.log").open("a") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(url + "/info/", timeout=30).ok:
                    break
            time.sleep(0.5)
        yield url
    finally:
        print(f"server with prelabel {prelabel}: peak RSS {peak_rss_gib(process.pid):.2f} GiB")
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(60)


def peak_rss_gib(pid: int) -> float:
    """The process's peak resident memory so far (Linux: VmHWM in /proc/PID/status, in kB)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    return float("nan")


def status(url: str) -> dict:
    return requests.get(url + "/info/", timeout=60).json()["models"]["universal"]["prelabel"]


def wait_for(url: str, cached: int) -> float:
    started = time.perf_counter()
    while status(url)["cached"] < cached or status(url)["current"]:
        time.sleep(2)
    return time.perf_counter() - started


def auto_segmentation(url: str, image: str) -> float:
    """Seconds of one *Auto Segmentation* as the Slicer module asks for it (the answer read whole)."""
    started = time.perf_counter()
    answer = requests.post(f"{url}/infer/universal", params={"image": image},
                           data={"params": json.dumps({"client_id": "bench"})}, timeout=3600)
    answer.raise_for_status()
    return time.perf_counter() - started


def window_seconds(url: str, image: str) -> float:
    """One window's seconds in the pre-labelling of ``image``: its network time over its windows."""
    answer = requests.post(f"{url}/infer/universal", params={"image": image, "output": "json"},
                           data={"params": "{}"}, timeout=3600)
    answer.raise_for_status()
    report = answer.json()["report"]
    return report["timings_s"]["network"] / report["settings"]["windows"]


def uploaded_infer(url: str, path: Path) -> float:
    started = time.perf_counter()
    with path.open("rb") as stream:
        answer = requests.post(f"{url}/infer/universal", params={"output": "json"},
                               files={"file": (path.name, stream)}, data={"params": "{}"}, timeout=3600)
    answer.raise_for_status()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2, help="phantoms pre-labelled first (default 2)")
    parser.add_argument("--requests", type=int, default=20, help="timed Next Sample → Auto Segmentation (default 20)")
    parser.add_argument("--shape", type=int, nargs=3, default=CLINICAL_SHAPE)
    parser.add_argument("--spacing", type=float, nargs=3, default=CLINICAL_SPACING)
    parser.add_argument("--model", type=Path, help="a trained model to serve (default: the released U-Net, random)")
    args = parser.parse_args()
    print(f"CPU: {cpu_description()}")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        studies, model_dir = root / "studies", root / "model"
        studies.mkdir()
        model_dir.mkdir()
        torch.manual_seed(0)
        served = universal.load_model(args.model) if args.model else universal.UniversalModel(
            "unet", class_embeddings=torch.randn(32, 512))
        universal.save_model(served, model_dir / "clip_driven_universal_unet.pth")
        print(f"model: {served.title} width {served.width}, {args.model or 'random weights'}")
        phantom = {"shape": tuple(args.shape), "spacing": tuple(args.spacing)}
        for number in range(args.images):
            save_phantom(make_phantom(number, **phantom), studies / f"case{number}.nii.gz")
        save_phantom(make_phantom(99, **SMALL), root / "small.nii.gz")
        with server(root, studies, model_dir, "true") as url:
            seconds = wait_for(url, args.images)
            print(f"pre-labelled {args.images} images of {'×'.join(map(str, args.shape))} in {seconds:.0f} s "
                  f"({seconds / args.images:.0f} s each)")
            times = []
            for number in range(args.requests):
                image = requests.post(f"{url}/activelearning/random", json={"client_id": "bench"},
                                      timeout=60).json()["id"]
                times.append(auto_segmentation(url, image))
                print(f"  request {number + 1}: {image} {times[-1]:.2f} s")
            times.sort()
            p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
            print(f"Next Sample → Auto Segmentation, pre-labelled: p50 {statistics.median(times):.2f} s, "
                  f"p95 {p95:.2f} s over {len(times)} requests")

            window = window_seconds(url, "case0")
            idle = [uploaded_infer(url, root / "small.nii.gz") for _ in range(3)]
            save_phantom(make_phantom(50, **phantom), studies / "cold.nii.gz")
            while status(url)["current"] != "cold":  # the background has taken the new image
                time.sleep(0.5)
            busy = [uploaded_infer(url, root / "small.nii.gz") for _ in range(3)]
            print(f"a small uploaded image's /infer: {statistics.median(idle):.2f} s idle, "
                  f"{statistics.median(busy):.2f} s while the background pre-labels "
                  f"(delay {statistics.median(busy) - statistics.median(idle):.2f} s; one window {window:.2f} s)")
            (studies / "cold.nii.gz").unlink()
        with server(root, studies, model_dir, "false") as url:
            save_phantom(make_phantom(51, **phantom), studies / "cold2.nii.gz")
            time.sleep(5)  # the datastore notices the new file
            seconds = auto_segmentation(url, "cold2")
            print(f"a cold image's Auto Segmentation (no pre-label): {seconds:.1f} s")


if __name__ == "__main__":
    main()
