"""Run the Snakemake workflow end to end in a scratch working directory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from psfmatch import io

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.workflow


def _workdir(tmp_path: Path, *, psf_match: dict | None = None) -> Path:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["simulate"] = {"small": {"seed": 3, "shape": [256, 256]}}
    config["pairs"] = "config/pairs.tsv"
    if psf_match:
        config["psf_match"].update(psf_match)
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "config" / "pairs.tsv").write_text(
        "pair\ttemplate\tscience\n"
        "p1\tresults/simulated/small/template.fits\tresults/simulated/small/science.fits\n"
    )
    return tmp_path


def _snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
         "--directory", str(workdir), *args],
        capture_output=True, text=True, timeout=600, check=False,
    )


def test_workflow_runs_and_ingest_is_lossless(tmp_path):
    workdir = _workdir(tmp_path)
    run = _snakemake(workdir, "--cores", "2")
    assert run.returncode == 0, run.stdout + run.stderr
    for role in ("template", "science"):
        simulated = io.read_exposure(workdir / f"results/simulated/small/{role}.fits")
        ingested = io.read_exposure(workdir / f"results/p1/input/{role}.fits")
        np.testing.assert_array_equal(ingested.image, simulated.image)
        np.testing.assert_array_equal(ingested.mask, simulated.mask)
        np.testing.assert_array_equal(ingested.variance, simulated.variance)
        assert ingested.mask_planes == simulated.mask_planes
        assert (workdir / f"logs/ingest/p1.{role}.log").is_file()
    truth = io.read_json(workdir / "results/simulated/small/truth.json")
    assert truth["params"]["shape"] == [256, 256]
    # Nothing left to do on a second run.
    again = _snakemake(workdir, "--cores", "2", "-n")
    assert "Nothing to be done" in again.stdout + again.stderr


def test_typo_in_psf_match_fails_before_any_job(tmp_path):
    workdir = _workdir(tmp_path, psf_match={"kernalSize": 21})
    run = _snakemake(workdir, "-n")
    assert run.returncode != 0
    assert "kernalSize" in run.stdout + run.stderr
    assert not (workdir / "results").exists()


def test_out_of_range_value_fails_naming_key_and_value(tmp_path):
    workdir = _workdir(tmp_path, psf_match={"spatialKernelOrder": -1})
    run = _snakemake(workdir, "-n")
    assert run.returncode != 0
    assert "spatialKernelOrder" in run.stdout + run.stderr
    assert "-1" in run.stdout + run.stderr
