"""Benchmark the whole DAG on a simulated pair: per-step wall time and peak memory.

Usage (from the repository root, in the installed environment)::

    python bench/dag_benchmark.py --size 4096 --cores 2 [--workdir /tmp/psfmatch-bench]

The simulated pair is generated first (not timed); then ``snakemake --cores N`` runs
every step from ingest to convolve and is timed end to end. Per-step numbers come from
Snakemake's ``benchmark:`` files (wall seconds, max RSS in MB), which include each job's
interpreter start-up.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/psfmatch-bench"))
    args = parser.parse_args()

    work = args.workdir
    shutil.rmtree(work, ignore_errors=True)
    (work / "config").mkdir(parents=True)
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["simulate"] = {"bench": {"seed": args.seed, "shape": [args.size, args.size]}}
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    (work / "config" / "pairs.tsv").write_text(
        "pair\ttemplate\tscience\n"
        "bench\tresults/simulated/bench/template.fits\tresults/simulated/bench/science.fits\n"
    )
    base = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
            "--directory", str(work), "--cores", str(args.cores), "--quiet=all"]
    subprocess.run([*base, "results/simulated/bench/science.fits"], check=True)
    start = time.perf_counter()
    subprocess.run(base, check=True)
    total = time.perf_counter() - start

    print(f"\n{args.size}x{args.size} pair, --cores {args.cores}: whole DAG (ingest..convolve) "
          f"{total:.2f} s wall\n")
    print(f"{'step':<34}{'wall s':>9}{'max RSS MB':>12}")
    for tsv in sorted((work / "benchmarks").rglob("*.tsv")):
        if tsv.parent.name == "simulate":
            continue
        with tsv.open() as handle:
            row = next(csv.DictReader(handle, delimiter="\t"))
        name = f"{tsv.parent.name}/{tsv.stem}"
        print(f"{name:<34}{float(row['s']):>9.2f}{float(row['max_rss']):>12.1f}")
    metrics = yaml.safe_load((work / "results" / "bench" / "metrics.json").read_text())
    print(f"\nkernel sum {metrics['kernel_sum']:.5f}, verdict {metrics['verdict']}, "
          f"clipped std of D/sigma {metrics['difference']['clipped_std']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
