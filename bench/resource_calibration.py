"""Measure every step's peak memory and wall time against the image size.

Usage (from the repository root, in the installed environment)::

    python bench/resource_calibration.py --sizes 512 1024 2048 4096 [--cores 2]

For each size, a simulated pair of that many pixels per side is run through the whole
workflow (``snakemake --cores N``). Each job's script interpreter records its own peak
resident memory (``VmHWM``) and wall time when it exits, through a ``sitecustomize``
module put on ``PYTHONPATH`` for the run only; the workflow itself is unchanged. Snakemake's
``benchmark:`` files sample memory too coarsely for jobs of a second or less, hence this.

The output is a table per step and a least-squares fit ``peak MB = base + per_mpix * Mpix``,
the numbers :mod:`psfmatch.resources` is calibrated with (its constants carry a margin on
top of these).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]

_SITECUSTOMIZE = '''
import atexit, json, os, re, sys, time
_start = time.perf_counter()
_script = sys.argv[0] if sys.argv else ""
if "/.snakemake/scripts/" in _script:
    @atexit.register
    def _record():
        # VmHWM is this process image's own peak; ru_maxrss can carry the parent's
        with open("/proc/self/status") as status:
            rss_mb = int(re.search(r"VmHWM:\\s+(\\d+)", status.read())[1]) / 1024.0
        with open(os.environ["PSFMATCH_RSS_LOG"], "a") as handle:
            handle.write(json.dumps({"script": os.path.basename(_script), "rss_mb": rss_mb,
                                     "wall_s": time.perf_counter() - _start}) + "\\n")
'''


def _step_name(script: str) -> str:
    # Snakemake names the copy tmp<random>.<script name>.py
    return re.sub(r"^tmp[^.]*\.", "", script).removesuffix(".py")


def run_size(size: int, cores: int, workdir: Path, hook_dir: Path) -> dict[str, dict]:
    shutil.rmtree(workdir, ignore_errors=True)
    (workdir / "config").mkdir(parents=True)
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["simulate"] = {"cal": {"seed": 1, "shape": [size, size]}}
    # no exposures sheet in the scratch folder: model-PSF matching is not part of the run
    config["model_psf_match"].pop("exposures", None)
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    (workdir / "config" / "pairs.tsv").write_text(
        "pair\ttemplate\tscience\n"
        "cal\tresults/simulated/cal/template.fits\tresults/simulated/cal/science.fits\n"
    )
    log = workdir / "rss.jsonl"
    path = os.pathsep.join(p for p in (str(hook_dir), os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, PSFMATCH_RSS_LOG=str(log), PYTHONPATH=path)
    subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
                    "--directory", str(workdir), "--cores", str(cores), "--quiet=all",
                    "--workflow-profile", "none"], check=True, env=env)
    per_step: dict[str, dict] = defaultdict(lambda: {"rss_mb": 0.0, "wall_s": 0.0})
    for line in log.read_text().splitlines():
        rec = json.loads(line)
        step = per_step[_step_name(rec["script"])]
        step["rss_mb"] = max(step["rss_mb"], rec["rss_mb"])
        step["wall_s"] = max(step["wall_s"], rec["wall_s"])
    return dict(per_step)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048, 4096])
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--workdir", type=Path,
                        default=Path(tempfile.gettempdir()) / "psfmatch-cal")
    args = parser.parse_args()
    hook_dir = args.workdir / "hook"
    hook_dir.mkdir(parents=True, exist_ok=True)
    (hook_dir / "sitecustomize.py").write_text(_SITECUSTOMIZE)

    results = {size: run_size(size, args.cores, args.workdir / str(size), hook_dir)
               for size in args.sizes}
    steps = sorted({s for r in results.values() for s in r})
    header = "".join(f"{size:>10}²" for size in args.sizes)
    print(f"\npeak RSS MB (max over the step's jobs); wall s in brackets\n{'step':<22}{header}"
          f"{'base MB':>10}{'MB/Mpix':>10}")
    for step in steps:
        mpix = np.array([s * s / 1e6 for s in args.sizes])
        rss = np.array([results[s].get(step, {}).get("rss_mb", np.nan) for s in args.sizes])
        cells = "".join(f"{r:>7.0f}({results[s][step]['wall_s']:>3.1f})" if step in results[s]
                        else f"{'-':>11}" for s, r in zip(args.sizes, rss, strict=True))
        slope, base = np.polyfit(mpix, rss, 1) if np.isfinite(rss).all() else (np.nan, np.nan)
        print(f"{step:<22}{cells}{base:>10.0f}{slope:>10.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
