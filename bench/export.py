"""Exporting a team's dataset: seconds and peak memory of ``export_dataset`` over a studies folder of
N labelled phantoms (as MONAI Label's datastore keeps them), and of the zip stream the server sends.
Each export runs in a fresh process, so its peak RSS is its own; the RSS after the imports is printed
beside it (the export's own memory is the difference).

    python bench/export.py                # 200 images of 64×64×48
    python bench/export.py --images 50 --format msd
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import nibabel as nib
import numpy as np

import universal
from universal.devices import cpu_description
from universal.synth import make_phantom, save_phantom

SHAPE, SPACING = (64, 64, 48), (6.4, 6.4, 10.0)
NAMES = ["Liver", "Spleen", "Right Kidney", "Left Kidney", "Pancreas"]

MEASURE = textwrap.dedent("""
    import resource, sys, time
    from universal.export import export_dataset
    from universal.io.archive import zip_chunks
    imported = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    started = time.perf_counter()
    summary = export_dataset(sys.argv[1], sys.argv[2], sys.argv[3])
    exported = time.perf_counter() - started
    started, size = time.perf_counter(), 0
    for chunk in zip_chunks(summary.folder):
        size += len(chunk)
    zipped = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(len(summary.cases), f"{exported:.1f}", f"{zipped:.1f}", size >> 20, imported, peak)
""")


def studies_folder(root: Path, count: int) -> Path:
    """``count`` phantoms with a final label each, saved through MONAI Label's LocalDatastore."""
    from monailabel.datastore.local import LocalDatastore

    studies = root / "studies"
    studies.mkdir(parents=True)
    datastore = LocalDatastore(str(studies), extensions=["*.nii.gz"], auto_reload=False)
    catalog = universal.Catalog.default()
    info = [{"name": name, "idx": value} for value, name in enumerate(NAMES, start=1)]
    for number in range(count):
        phantom = make_phantom(number, shape=SHAPE, spacing=SPACING)
        save_phantom(phantom, root / "image.nii.gz")
        datastore.add_image(f"case{number:04d}", str(root / "image.nii.gz"), {})
        label = np.zeros(phantom.label.shape, np.uint8)
        for value, name in enumerate(NAMES, start=1):
            label[phantom.label == catalog[name].id] = value
        nib.save(nib.Nifti1Image(label, phantom.affine), root / "label.nii.gz")
        datastore.save_label(f"case{number:04d}", str(root / "label.nii.gz"), "final", {"label_info": info})
    return studies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200, help="labelled images (default 200)")
    parser.add_argument("--format", default="nnunetv2", choices=("nnunetv2", "msd", "nifti"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        studies = studies_folder(root, args.images)
        done = subprocess.run([sys.executable, "-c", MEASURE, str(studies), str(root / "out"), args.format],
                              capture_output=True, text=True, check=True)
        cases, exported, zipped, size, imported, peak = done.stdout.split()
    print(f"CPU: {cpu_description()}")
    print(f"{cases} images of {'×'.join(map(str, SHAPE))} exported as {args.format} in {exported} s; zip stream "
          f"of {size} MiB in {zipped} s; peak RSS {peak} MiB ({imported} MiB after the imports)")


if __name__ == "__main__":
    main()
