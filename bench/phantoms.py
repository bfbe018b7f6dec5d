"""Time synthetic phantoms: a test-sized and a clinical volume, made and written as NIfTI.

    .venv/bin/python bench/phantoms.py [--seed N] [--repeat N] [--skip-clinical]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from universal.synth import CLINICAL_SHAPE, CLINICAL_SPACING, make_phantom, save_phantom

SIZES = {
    "test": ((96, 96, 48), (4.4, 4.4, 5.0)),
    "clinical": (CLINICAL_SHAPE, CLINICAL_SPACING),
}


def bench(name: str, seed: int, repeat: int) -> None:
    """Print the best of ``repeat`` generation times, the write time and the classes drawn."""
    shape, spacing = SIZES[name]
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        phantom = make_phantom(seed, shape, spacing, lesions=True)
        times.append(time.perf_counter() - start)
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        save_phantom(phantom, Path(folder) / "ct.nii.gz", Path(folder) / "label.nii.gz")
        written = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{name:9s} {'×'.join(map(str, shape)):>12s} at {'×'.join(map(str, spacing))} mm: "
        f"make {min(times):6.2f} s, write {written:5.2f} s, {len(phantom.class_ids())} classes, "
        f"peak memory so far {peak:,.0f} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3, help="runs per size; the best is reported")
    parser.add_argument("--skip-clinical", action="store_true", help="time the test size only")
    args = parser.parse_args()
    bench("test", args.seed, args.repeat)
    if not args.skip_clinical:
        bench("clinical", args.seed, 1)


if __name__ == "__main__":
    main()
