"""psfmatch against HOTPANTS on simulated pairs: wall time, memory, per step, fidelity.

Usage (from the repository root, in the installed environment)::

    python bench/performance.py [--sizes 512 1024 2048 4096] [--cores 2]
        [--workdir /tmp/psfmatch-perf] [--hotpants PATH]

For each size a simulated pair (``simulate: {bench: {seed: 1, shape: [N, N]}}``, the
rest of ``config/config.yaml``) is generated first, untimed. Then, side by side:

* psfmatch: ``snakemake --cores N results/bench/difference.fits`` (ingest to the final,
  decorrelated difference; QA and DIA sources not included) under ``/usr/bin/time -v``:
  wall, user + system CPU, the peak resident memory of the largest job;
* HOTPANTS (``--hotpants``, default ``hotpants`` on ``PATH``; said so when absent) on the
  same pair, converted untimed to its inputs: single-HDU float32 images with the sky level
  (``SKYLEVEL``) added back (HOTPANTS's lower limits ``-tl/-il 1`` assume raw counts: on a
  sky-subtracted image it flags half the sky and fits nothing) and 1σ noise images;
  command line as in its README (``-c t -n i``).

Per step: Snakemake's ``benchmark:`` files (wall, max RSS sampled) and, from a
``sitecustomize`` hook on ``PYTHONPATH`` for the run only, each job's own CPU seconds,
peak (``VmHWM``) and which heavy libraries it loaded. The check at the end: the steps
in :data:`LIGHT_STEPS` must not load astropy, scipy, photutils or matplotlib (their
start-up is most of a small job's cost); ``python -X importtime`` of each step module
is printed beside. Exit status 1 if the check fails.

One Snakemake start on each finished pair (``snakemake -n``, median of 5): the cost a SLURM
group job pays once per step (``.ci/slurm-check.sh`` prints what it adds per step).

Fidelity (the issue's figures): kernel sum against the truth, relative L1 error of the
kernel image against the truth kernel (centre and worst corner), and std(D/σ) on star
pixels of the raw difference, of HOTPANTS's difference and of the oracle
:math:`S - K_{\\rm true} \\star T - B_{\\rm true}`, all with σ from psfmatch's raw
difference variance, on (a) the final GOOD candidates' stamps and (b) ±10 px around the
simulated stars of template flux 1e3–5e4.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from perf_support import fidelity, hotpants_inputs  # noqa: E402

#: Steps whose jobs only read and write psfmatch's own files and tables, and the heavy
#: libraries each may load (convolve: scipy's FFT).
LIGHT_STEPS = {"ingest": (), "warp": (), "fit_single_kernels": (), "kernel_sum_clip": (),
               "spatial_fit": (), "final_kernel": (), "assess": (), "convolve": ("scipy",)}
HEAVY = ("astropy", "scipy", "photutils", "matplotlib")
HOOK = '''
import atexit, json, os, re, resource, sys
_script = sys.argv[0] if sys.argv else ""
if "/.snakemake/scripts/" in _script:
    @atexit.register
    def _record():
        with open("/proc/self/status") as status:
            peak = int(re.search(r"VmHWM:\\s+(\\d+)", status.read())[1]) / 1024.0
        use = resource.getrusage(resource.RUSAGE_SELF)
        top = sorted({m.split(".")[0] for m in sys.modules})
        job = getattr(sys.modules["__main__"], "snakemake", None)
        log = str(job.log[0]) if job is not None and len(job.log) else ""
        with open(os.environ["PSFMATCH_JOB_LOG"], "a") as handle:
            handle.write(json.dumps({"script": os.path.basename(_script), "log": log,
                                     "peak_mb": peak,
                                     "cpu_s": use.ru_utime + use.ru_stime,
                                     "modules": top}) + "\\n")
'''


def timed(cmd: list[str], out: Path, env: dict[str, str] | None = None) -> dict[str, float]:
    """Run ``cmd`` under ``/usr/bin/time -v``; wall, CPU (user + sys) and peak (MiB)."""
    with open(out.with_suffix(".log"), "w") as log:
        subprocess.run(["/usr/bin/time", "-v", "-o", str(out), *cmd], check=True,
                       stdout=log, stderr=subprocess.STDOUT, env=env)
    text = out.read_text()

    def field(name: str) -> str:
        return re.search(rf"{re.escape(name)}: (.+)", text)[1].strip()

    parts = [float(p) for p in field("Elapsed (wall clock) time (h:mm:ss or m:ss)").split(":")]
    wall = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
    return {"wall_s": wall, "cpu_s": float(field("User time (seconds)"))
            + float(field("System time (seconds)")),
            "peak_mib": float(field("Maximum resident set size (kbytes)")) / 1024.0}


def workdir(root: Path, size: int) -> Path:
    work = root / f"s{size}"
    shutil.rmtree(work, ignore_errors=True)
    (work / "config").mkdir(parents=True)
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["simulate"] = {"bench": {"seed": 1, "shape": [size, size]}}
    config["model_psf_match"].pop("exposures", None)  # no exposures sheet here
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    (work / "config" / "pairs.tsv").write_text(
        "pair\ttemplate\tscience\n"
        "bench\tresults/simulated/bench/template.fits\tresults/simulated/bench/science.fits\n")
    return work


def steps_table(work: Path) -> list[dict[str, object]]:
    """Per job: Snakemake's benchmark row and the hook's record."""
    hooks: dict[str, dict] = {}  # by log file: logs/<rule>/<job>.log
    for line in (work / "jobs.jsonl").read_text().splitlines():
        rec = json.loads(line)
        hooks[str(Path(rec["log"]).with_suffix(""))] = rec
    rows = []
    for tsv in sorted((work / "benchmarks").rglob("*.tsv")):
        if tsv.parent.name == "simulate":
            continue
        with tsv.open() as handle:
            bench = next(csv.DictReader(handle, delimiter="\t"))
        step = tsv.parent.name
        rec = hooks.get(f"logs/{step}/{tsv.stem}", {})
        rows.append({"job": f"{step}/{tsv.stem}", "step": step, "wall_s": float(bench["s"]),
                     "rss_mb": float(bench["max_rss"]), "cpu_s": rec.get("cpu_s"),
                     "peak_mb": rec.get("peak_mb"),
                     "heavy": [m for m in HEAVY if m in rec.get("modules", [])]})
    return rows


def import_times() -> dict[str, float]:
    """``python -X importtime`` of each step module: cumulative seconds."""
    out = {}
    for module in ("psfmatch.steps.ingest", "psfmatch.steps.prepare", "psfmatch.steps.solve",
                   "psfmatch.steps.difference", "psfmatch.steps.finalize",
                   "psfmatch.steps.subtraction"):
        run = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"],
                             capture_output=True, text=True, check=True)
        last = [ln for ln in run.stderr.splitlines() if ln.rstrip().endswith(module)][-1]
        out[module] = int(last.split("|")[1]) / 1e6
    return out


def snakemake_start(work: Path, runs: int = 5) -> dict[str, float]:
    """One Snakemake start on a finished pair (parse the workflow, build the DAG, ``-n``):
    the median of ``runs``. Inside a SLURM group job every step pays it once."""
    cmd = [sys.executable, "-m", "snakemake", "results/bench/difference.fits",
           "--snakefile", str(REPO / "Snakefile"), "--directory", str(work), "--cores", "1",
           "-n", "--quiet", "rules"]
    samples = [timed(cmd, work / f"start{i}.time") for i in range(runs)]
    return {key: statistics.median(s[key] for s in samples) for key in samples[0]}


def run_size(root: Path, size: int, cores: int, hotpants: str | None) -> dict[str, object]:
    work = workdir(root, size)
    base = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
            "--directory", str(work), "--cores", str(cores), "--quiet=all"]
    subprocess.run([*base, "results/simulated/bench/science.fits"], check=True,
                   capture_output=True)
    hook = work / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(HOOK)
    import os

    env = dict(os.environ, PSFMATCH_JOB_LOG=str(work / "jobs.jsonl"),
               PYTHONPATH=os.pathsep.join(p for p in (str(hook), os.environ.get("PYTHONPATH"))
                                          if p))
    shutil.rmtree(work / "benchmarks", ignore_errors=True)
    result: dict[str, object] = {"size": size}
    result["psfmatch"] = timed([*base, "results/bench/difference.fits"], work / "psfmatch.time",
                               env)
    result["steps"] = steps_table(work)
    result["hotpants"] = None
    if hotpants:
        hp = work / "hp"
        hp.mkdir()
        for role in ("template", "science"):
            hotpants_inputs(work / f"results/simulated/bench/{role}.fits", hp / f"{role}.fits",
                            hp / f"{role}_noise.fits")
        result["hotpants"] = timed([
            hotpants, "-inim", str(hp / "science.fits"), "-tmplim", str(hp / "template.fits"),
            "-outim", str(hp / "diff.fits"), "-tni", str(hp / "template_noise.fits"),
            "-ini", str(hp / "science_noise.fits"), "-c", "t", "-n", "i", "-tu", "79000",
            "-iu", "79000", "-tl", "1", "-il", "1", "-tuk", "79000", "-iuk", "79000",
            "-v", "0"], work / "hotpants.time")
    result["fidelity"] = fidelity(work, work / "hp" / "diff.fits" if hotpants else None)
    result["snakemake_start"] = snakemake_start(work)
    return result


def report(results: list[dict], imports: dict[str, float], hotpants: str | None) -> int:
    print("\n## psfmatch and HOTPANTS side by side (ingest .. difference.fits)\n")
    if not hotpants:
        print("HOTPANTS not found (give --hotpants PATH): its columns are empty.\n")
    print("| size | psfmatch wall s | CPU s | peak MiB | HOTPANTS wall s | CPU s | peak MiB "
          "| wall ratio | peak ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        p, h = r["psfmatch"], r["hotpants"]
        hp = (f"{h['wall_s']:.1f} | {h['cpu_s']:.1f} | {h['peak_mib']:.0f} | "
              f"{p['wall_s'] / h['wall_s']:.2f} | {p['peak_mib'] / h['peak_mib']:.2f}"
              if h else "– | – | – | – | –")
        print(f"| {r['size']}² | {p['wall_s']:.1f} | {p['cpu_s']:.1f} | {p['peak_mib']:.0f} | "
              f"{hp} |")
    print("\n## Fidelity\n")
    print("| size | kernel sum (truth) | rel. L1 centre / worst corner | std(D/σ) stamps: "
          "oracle, psfmatch, HOTPANTS | stars: oracle, psfmatch, HOTPANTS |")
    print("|---|---|---|---|---|")
    for r in results:
        f = r["fidelity"]

        def trio(s: dict) -> str:
            hp = f", {s['hotpants']:.4f} (×{s['hotpants'] / s['oracle']:.4f})" \
                if "hotpants" in s else ""
            return (f"{s['oracle']:.4f}, {s['psfmatch']:.4f} "
                    f"(×{s['psfmatch'] / s['oracle']:.4f}){hp}")

        print(f"| {r['size']}² | {f['kernel_sum']:.5f} ({f['truth_sum']}) | "
              f"{f['l1'][0]:.3f} / {max(f['l1'][1:]):.3f} | {trio(f['stamps'])} | "
              f"{trio(f['stars'])} |")
    failures = []
    for r in results:
        print(f"\n## Steps at {r['size']}² (benchmark wall, sampled RSS; job CPU, VmHWM)\n")
        print(f"{'job':<34}{'wall s':>8}{'RSS MB':>8}{'CPU s':>8}{'peak MB':>9}  heavy modules")
        for row in r["steps"]:
            cpu = f"{row['cpu_s']:.2f}" if row["cpu_s"] is not None else "–"
            peak = f"{row['peak_mb']:.0f}" if row["peak_mb"] is not None else "–"
            print(f"{row['job']:<34}{row['wall_s']:>8.2f}{row['rss_mb']:>8.0f}{cpu:>8}"
                  f"{peak:>9}  {' '.join(row['heavy']) or '-'}")
            extra = [m for m in row["heavy"] if m not in LIGHT_STEPS.get(row["step"], HEAVY)]
            if extra:
                failures.append(f"{r['size']}² {row['job']} loaded {extra}")
    print("\n## One Snakemake start (parse + DAG of the finished pair, `-n`, median of 5)\n")
    for r in results:
        s = r["snakemake_start"]
        print(f"{r['size']}²: {s['wall_s']:.2f} s wall, {s['cpu_s']:.2f} s CPU, "
              f"{s['peak_mib']:.0f} MiB (a SLURM group job pays it once per step)")
    print("\n## Import cost of each step module (python -X importtime, cumulative)\n")
    for module, seconds in imports.items():
        print(f"{module:<34}{seconds:>7.3f} s")
    if failures:
        print("\nIMPORT CHECK FAILED:\n  " + "\n  ".join(failures))
        return 1
    print(f"\nimport check passed: {', '.join(LIGHT_STEPS)} load none of {', '.join(HEAVY)} "
          "(convolve: scipy's FFT only)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048, 4096])
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/psfmatch-perf"))
    parser.add_argument("--hotpants", default=shutil.which("hotpants"))
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    hotpants = args.hotpants if args.hotpants and Path(args.hotpants).is_file() else None
    results = [run_size(args.workdir, size, args.cores, hotpants) for size in args.sizes]
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return report(results, import_times(), hotpants)


if __name__ == "__main__":
    raise SystemExit(main())
