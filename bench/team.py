"""The team's work on a clinical-size label (512×512×200 by default): seconds of what each route of the
app runs, called in-process on the library (the route adds its HTTP transfer): a served prediction
kept, a label saved as a version (with its effort against that prediction), the image's record,
one version read back, agreement between two annotators, a majority and a STAPLE consensus, a review,
and the effort summed over the team.

    python bench/team.py
    python bench/team.py --shape 256 256 100 --spacing 1.6 1.6 5
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

import universal
from universal.devices import cpu_description
from universal.io.labels import write_label_file
from universal.serving.label_versions import LabelVersions
from universal.serving.team import consensus_label, effort_by, image_agreement
from universal.synth import CLINICAL_SHAPE, CLINICAL_SPACING, make_phantom

NAMES = ["Liver", "Spleen", "Right Kidney", "Left Kidney", "Stomach", "Pancreas", "Aorta"]


def timed(what: str, run) -> object:
    started = time.perf_counter()
    result = run()
    print(f"| {what} | {time.perf_counter() - started:.2f} |")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=3, default=CLINICAL_SHAPE)
    parser.add_argument("--spacing", type=float, nargs=3, default=CLINICAL_SPACING)
    args = parser.parse_args()
    catalog = universal.Catalog.default()
    phantom = make_phantom(0, shape=tuple(args.shape), spacing=tuple(args.spacing))
    values = dict(enumerate(NAMES, start=1))
    truth = np.zeros(phantom.label.shape, np.uint8)
    for value, name in values.items():
        truth[phantom.label == catalog[name].id] = value
    grown = truth.copy()
    grown[np.roll(truth == 1, 3, axis=0) & (truth == 0)] = 1  # the second annotator's liver is larger
    print(f"CPU: {cpu_description()}; a label of {'×'.join(map(str, args.shape))}, {len(NAMES)} classes")
    print("| route (what it runs) | s |\n|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        team = LabelVersions(root / "team")
        first = write_label_file(truth, phantom.affine, root / "first.nii.gz")
        second = write_label_file(grown, phantom.affine, root / "second.nii.gz")
        timed("/infer: the served prediction kept (after the answer)",
              lambda: team.serve("case", "ann1", truth, phantom.affine, values, 3))
        team.serve("case", "ann2", truth, phantom.affine, values, 3)
        timed("PUT /datastore/label: a version kept, with its effort", lambda: team.add_version(
            "case", first, values, "ann1"))
        team.add_version("case", second, values, "ann2")
        timed("GET /universal/labels/{image}", lambda: team.record("case"))
        timed("GET /universal/labels/{image}/{version}", lambda: team.label_map("case", 1))
        timed("GET /universal/agreement/{image} (Dice, MSD, HD95)", lambda: image_agreement(team, "case"))
        timed("POST /universal/consensus/{image}?method=majority", lambda: consensus_label(team, "case", "majority"))
        timed("POST /universal/consensus/{image}?method=staple", lambda: consensus_label(team, "case", "staple"))
        timed("POST /universal/review/{image}", lambda: team.review("case", "rev", {"Liver": ("approved", "")}))
        timed("GET /universal/effort", lambda: effort_by(team.records()))


if __name__ == "__main__":
    main()
