"""Anatomy checks over clean phantoms: how often a clean phantom gets a finding above ``info``
(seeds, both orientations, with and without lesions), and the seconds a check takes on a
clinical-size label map.

    python bench/anatomy.py                 # 60 phantoms of 128×128×96 at 3.2×3.2×5 mm, and the timing
    python bench/anatomy.py --phantoms 100
"""

from __future__ import annotations

import argparse
import collections
import statistics
import time

import universal
from universal.devices import cpu_description
from universal.quality import check_label_map
from universal.synth import CLINICAL_SHAPE, CLINICAL_SPACING, make_phantom


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phantoms", type=int, default=60, help="clean phantoms to check (default 60)")
    args = parser.parse_args()
    catalog = universal.Catalog.default()
    flagged, codes, seconds = 0, collections.Counter(), []
    for number in range(args.phantoms):
        seed, orientation, lesions = 1000 + number // 4, ("RAS", "LPS")[number % 2], bool(number // 2 % 2)
        phantom = make_phantom(seed, shape=(128, 128, 96), spacing=(3.2, 3.2, 5.0), orientation=orientation,
                               lesions=lesions)
        started = time.perf_counter()
        findings = check_label_map(phantom.label, phantom.affine, catalog)
        seconds.append(time.perf_counter() - started)
        above = [f for f in findings if f.severity != "info"]
        flagged += bool(above)
        codes.update(f"{f.code} {'/'.join(f.classes)}" for f in above)
    print(f"CPU: {cpu_description()}")
    print(f"clean phantoms with a finding above info: {flagged} of {args.phantoms} "
          f"({100 * flagged / args.phantoms:.1f} %); median check {statistics.median(seconds) * 1000:.1f} ms")
    for code, number in codes.most_common():
        print(f"  {number:3d}  {code}")
    phantom = make_phantom(0, shape=CLINICAL_SHAPE, spacing=CLINICAL_SPACING, lesions=True)
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        findings = check_label_map(phantom.label, phantom.affine, catalog)
        timings.append(time.perf_counter() - started)
    print(f"clinical-size label map {'×'.join(map(str, CLINICAL_SHAPE))}: {statistics.median(timings):.2f} s per check "
          f"(median of 3), {len(findings)} findings ({', '.join(sorted({f.code for f in findings})) or 'none'})")


if __name__ == "__main__":
    main()
