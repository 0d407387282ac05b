"""Killed jobs, reruns and determinism: nothing is lost and nothing differs.

* A writer killed with SIGKILL while it writes never leaves a file under the final name.
* A whole workflow killed with SIGKILL in the middle of writing a product, then
  unlocked and rerun with ``--rerun-incomplete``, ends with products byte-identical to
  an uninterrupted run.
* Two runs of the same config (``--cores 2`` and ``--cores 1``) give byte-identical
  FITS, Parquet and JSON products.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from tests.snakemake_run import run_snakemake, snakemake_command

from psfmatch import io
from psfmatch.exposure import Exposure

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.workflow, pytest.mark.slow]

SIMULATION = {"seed": 3, "shape": [512, 512], "star_density": 6000.0, "flux_min": 2000.0}
PRODUCT_SUFFIXES = (".fits", ".parquet", ".json")


def _prepare(workdir: Path) -> None:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["simulate"] = {"good": SIMULATION}
    config["pairs"] = "config/pairs.tsv"
    config["model_psf_match"].pop("exposures", None)  # image differencing only
    (workdir / "config").mkdir(parents=True)
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    (workdir / "config" / "pairs.tsv").write_text(
        "pair\ttemplate\tscience\ngood\tresults/simulated/good/template.fits\t"
        "results/simulated/good/science.fits\n")




def _products(workdir: Path) -> dict[str, bytes]:
    root = workdir / "results"
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.suffix in PRODUCT_SUFFIXES}


def _assert_identical(a: dict[str, bytes], b: dict[str, bytes]) -> None:
    assert sorted(a) == sorted(b)
    different = [name for name in a if a[name] != b[name]]
    assert not different, f"products differ: {different}"


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """An uninterrupted --cores 2 run."""
    workdir = tmp_path_factory.mktemp("reference")
    _prepare(workdir)
    run = run_snakemake(workdir, "--cores", "2")
    assert run.returncode == 0, run.stderr[-3000:]
    return workdir


def test_killed_writer_never_leaves_a_complete_looking_file(tmp_path):
    """SIGKILL a process while io.write_exposure writes a 4096² MEF (~200 MB)."""
    target = tmp_path / "big.fits"
    child = subprocess.Popen([sys.executable, "-c", (
        "import numpy as np; from psfmatch import io; from psfmatch.exposure import Exposure\n"
        "n = 4096\n"
        "e = Exposure(image=np.ones((n, n), np.float32), mask=np.zeros((n, n), np.int32),"
        " variance=np.ones((n, n), np.float32))\n"
        f"io.write_exposure({str(target)!r}, e)\n")])
    deadline = time.monotonic() + 120
    seen = None
    while time.monotonic() < deadline and child.poll() is None:
        tmp = [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-") and p.stat().st_size > 0]
        if tmp:
            seen = tmp[0]
            child.kill()
            break
        time.sleep(0.002)
    child.wait()
    assert seen is not None, "the writer finished before a temporary file was seen"
    assert child.returncode == -signal.SIGKILL
    assert not target.exists()
    # The next write of the same product removes the dead writer's temporary file.
    small = Exposure(image=np.ones((4, 4), np.float32), mask=np.zeros((4, 4), np.int32),
                     variance=np.ones((4, 4), np.float32))
    io.write_exposure(target, small)
    assert [p.name for p in tmp_path.iterdir()] == ["big.fits"]


def test_run_killed_mid_write_then_rerun_matches_uninterrupted(reference_run, tmp_path):
    workdir = tmp_path / "killed"
    _prepare(workdir)
    results = workdir / "results"
    proc = subprocess.Popen(snakemake_command(workdir, "--cores", "2"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    caught = None
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if results.is_dir():
                # Only products of the kernel DAG count (the simulator's are inputs).
                caught = next((p for p in results.glob("good/**/.tmp-*")), None)
                if caught is not None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    break
            time.sleep(0.001)
    finally:
        if proc.poll() is None and caught is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert caught is not None, "the run ended before any product write was caught"
    # The product being written when the run died does not exist under its final name
    # (unless its rename won the race against the kill, when the temporary is gone).
    final = caught.with_name(caught.name.split("-", 2)[2])
    if caught.exists():
        assert not final.exists(), f"{final} exists although its write was killed"
    unlock = run_snakemake(workdir, "--unlock")
    assert unlock.returncode == 0, unlock.stderr[-2000:]
    rerun = run_snakemake(workdir, "--cores", "2", "--rerun-incomplete")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert not list(results.rglob(".tmp-*")), "temporary files survived the rerun"
    _assert_identical(_products(reference_run), _products(workdir))


def test_one_core_and_two_cores_give_identical_bytes(reference_run, tmp_path):
    workdir = tmp_path / "one_core"
    _prepare(workdir)
    run = run_snakemake(workdir, "--cores", "1")
    assert run.returncode == 0, run.stderr[-3000:]
    products = _products(workdir)
    assert any(name.endswith("difference.fits") for name in products)
    assert any(name.endswith(".parquet") for name in products)
    _assert_identical(_products(reference_run), products)
