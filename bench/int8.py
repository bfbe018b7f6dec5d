"""How far the int8 trunk's answer moves: per-class Dice of `--precision int8` against float32 (the
same sliding window, post-processing and classes) on the clinical phantom and unseen phantoms, for a
trained model. The int8 trunk is quantized first (once per weights, cached; its time is printed).

    python bench/int8.py --model run/model.pt                 # clinical phantom + 8 unseen phantoms
    python bench/int8.py --model run/model.pt --unseen 501 502

The phantoms the learning recipe trains on have seeds below 100; 501 and up are unseen. The lowest
Dice of each scan and over all of them is printed last.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import universal
from universal.nets.openvino import openvino_trunk
from universal.synth import CLINICAL_SHAPE, CLINICAL_SPACING, calibration_windows, make_phantom
from universal.synth.demo import PHANTOM


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2 * int((a & b).sum()) / total


def scans(unseen: list[int]) -> list[universal.Scan]:
    """The clinical phantom (seed 0, with lesions) and the learning recipe's phantom for each seed."""
    clinical = make_phantom(0, shape=CLINICAL_SHAPE, spacing=CLINICAL_SPACING, lesions=True)
    found = [universal.Scan(clinical.image.astype(np.float32), clinical.affine, "clinical")]
    for seed in unseen:
        phantom = make_phantom(seed, **PHANTOM)
        found.append(universal.Scan(phantom.image.astype(np.float32), phantom.affine, f"unseen {seed}"))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a trained model (a run's model.pt)")
    parser.add_argument("--unseen", type=int, nargs="*", default=list(range(501, 509)), help="phantom seeds")
    args = parser.parse_args()

    model = universal.load_model(args.model)
    started = time.perf_counter()
    trunk = openvino_trunk(model, "int8", calibration_windows)
    print(f"int8 trunk ready in {time.perf_counter() - started:.1f} s; on phantom windows: {trunk.agreement}")
    float32 = universal.Segmenter(model, universal.InferenceSettings(precision="float32", runtime="torch",
                                                                     compile="off"), progress=False)
    int8 = universal.Segmenter(model, universal.InferenceSettings(precision="int8"), progress=False,
                               calibration=calibration_windows)
    lowest = []
    for scan in scans(args.unseen):
        expected, ours = float32(scan), int8(scan)
        scores = {model.catalog[i].name: dice(ours.mask(i), expected.mask(i)) for i in expected.class_ids}
        lowest.append(min(scores.values()))
        print(f"{scan.name:12s} lowest {lowest[-1]:.4f}  " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))
    print(f"lowest per-class Dice over {len(lowest)} scans: {min(lowest):.4f}")


if __name__ == "__main__":
    main()
