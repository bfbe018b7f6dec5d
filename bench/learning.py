"""The learning test's recipe (``tests/test_learning.py``) over several seeds and thread counts.

Thread counts change how sums are rounded, which stands in for another CPU: a recipe that holds
here for every seed at 1 and 2 threads is not one lucky run. Each run trains the width-8 U-Net from
scratch on the two disjoint phantom datasets and measures Dice on unseen patients; the table is
printed last, with the CPU.

    python bench/learning.py                              # seeds 0-4 × 1 and 2 threads (~1 h on 2 cores)
    python bench/learning.py --seeds 0 1 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests"
REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"


def run_one(seed: int, threads: int, datasets: Path, embeddings: Path) -> dict:
    """Train and score one (seed, threads) in this process; returns the Dice per class."""
    import numpy as np

    sys.path.insert(0, str(TESTS))
    from partial_labels import LARGE_ORGANS, scores, train_base, unseen_cases

    import universal
    from universal.devices import cpu_description

    found = {"organs": datasets / "Organs", "kidneys": datasets / "Kidneys", "both": datasets / "BothKidneys",
             "templates": datasets / "templates.yaml"}
    with tempfile.TemporaryDirectory() as root:
        run = train_base(found, Path(root), embeddings, seed=seed, threads=threads)
        model = universal.load_model(run / "model.pt")
        dice = scores(model, unseen_cases(), (*LARGE_ORGANS, "Right Kidney", "Left Kidney"))
    mean = float(np.mean([dice[name] for name in LARGE_ORGANS]))
    return {"seed": seed, "threads": threads, "cpu": cpu_description(), "mean": mean, **dice}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--embeddings", type=Path, default=REFERENCE / "txt_encoding.pth",
                        help="the released class embeddings (txt_encoding.pth)")
    parser.add_argument("--one", type=int, nargs=2, metavar=("SEED", "THREADS"), help=argparse.SUPPRESS)
    parser.add_argument("--datasets", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(*args.one, args.datasets, args.embeddings)), flush=True)
        return
    if not args.embeddings.is_file():
        raise SystemExit(f"bench/learning.py: needs the released embeddings at {args.embeddings} (--embeddings)")
    sys.path.insert(0, str(TESTS))
    from partial_labels import CASES_PER_DATASET, PHANTOM, write_partial_datasets

    with tempfile.TemporaryDirectory() as folder:
        datasets = Path(folder)
        write_partial_datasets(datasets, CASES_PER_DATASET, **PHANTOM)
        runs = [(seed, threads) for threads in args.threads for seed in args.seeds]

        def launch(run):
            seed, threads = run
            command = [sys.executable, __file__, "--one", str(seed), str(threads), "--datasets", str(datasets),
                       "--embeddings", str(args.embeddings)]
            env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
            done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
            if done.returncode != 0:
                return {"seed": seed, "threads": threads, "error": done.stderr.strip().splitlines()[-1:]}
            row = json.loads(done.stdout.strip().splitlines()[-1])
            print(json.dumps(row), flush=True)
            return row

        # runs share the cores: as many at once as the cores hold at the largest thread count
        cores = os.cpu_count() or 1
        rows = []
        for threads in args.threads:
            batch = [run for run in runs if run[1] == threads]
            with ThreadPoolExecutor(max(1, cores // threads)) as pool:
                rows += list(pool.map(launch, batch))
    print_table(rows)


def print_table(rows: list[dict]) -> None:
    names = ["Liver", "Spleen", "Kidneys", "Stomach", "Right Kidney", "Left Kidney"]
    cpu = next((row["cpu"].rsplit(",", 1)[0] for row in rows if "cpu" in row), "unknown CPU")
    print(f"\nCPU: {cpu}")
    print("| seed | threads | " + " | ".join(names) + " | mean of 4 | lowest of 4 |")
    print("|---" * (len(names) + 4) + "|")
    for row in rows:
        if "error" in row:
            print(f"| {row['seed']} | {row['threads']} | failed: {row['error']} |")
            continue
        lowest = min(row[name] for name in names[:4])
        print(f"| {row['seed']} | {row['threads']} | " + " | ".join(f"{row[n]:.3f}" for n in names)
              + f" | {row['mean']:.3f} | {lowest:.3f} |")


if __name__ == "__main__":
    main()
