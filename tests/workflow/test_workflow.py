"""Run the Snakemake workflow end to end in a scratch working directory."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from psfmatch import io
from psfmatch.kernel import SpatialKernel

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.workflow, pytest.mark.slow]

# A 512² pair dense enough in bright stars for a well-constrained order-1 fit, and an
# empty 256² pair (no stars) that must fail on its own.
SIMULATIONS = {
    "good": {"seed": 3, "shape": [512, 512], "star_density": 6000.0, "flux_min": 2000.0},
    "empty": {"seed": 4, "shape": [256, 256], "star_density": 0.0, "galaxy_density": 0.0,
              "n_transients": 0, "n_variables": 0, "n_cosmic_rays": 0},
}


def _write_config(workdir: Path, config: dict, pairs: list[str]) -> None:
    (workdir / "config").mkdir(exist_ok=True)
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    rows = "".join(
        f"{p}\tresults/simulated/{p}/template.fits\tresults/simulated/{p}/science.fits\n"
        for p in pairs
    )
    (workdir / "config" / "pairs.tsv").write_text("pair\ttemplate\tscience\n" + rows)


def _base_config(pairs: list[str]) -> dict:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["simulate"] = {p: SIMULATIONS[p] for p in pairs}
    config["pairs"] = "config/pairs.tsv"
    return config


def _snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
         "--directory", str(workdir), *args],
        capture_output=True, text=True, timeout=900, check=False,
    )


def _jobs(dry_run_output: str) -> dict[str, int]:
    """Rule -> job count from the 'Job stats' table of a dry run."""
    table = dry_run_output.split("Job stats:")[-1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)
            if m.group(1) not in ("total", "job")}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One --keep-going run over a good and an empty pair, shared by the tests below."""
    workdir = tmp_path_factory.mktemp("wf")
    _write_config(workdir, _base_config(["good", "empty"]), ["good", "empty"])
    run = _snakemake(workdir, "--cores", "2", "--keep-going")
    return workdir, run


def test_good_pair_produces_every_product(finished_run):
    workdir, run = finished_run
    out = workdir / "results" / "good"
    for name in ("difference.fits", "matched_template.fits", "kernel.fits", "metrics.json"):
        assert (out / name).is_file(), run.stdout + run.stderr
    # ingest is lossless
    simulated = io.read_exposure(workdir / "results/simulated/good/science.fits")
    ingested = io.read_exposure(out / "input/science.fits")
    np.testing.assert_array_equal(ingested.image, simulated.image)
    np.testing.assert_array_equal(ingested.mask, simulated.mask)
    np.testing.assert_array_equal(ingested.variance, simulated.variance)
    metrics = io.read_json(out / "metrics.json")
    truth = io.read_json(workdir / "results/simulated/good/truth.json")
    assert metrics["verdict"] == "well constrained"
    # Kernel sum within 1 % of the photometric scale on this small, 512² field.
    assert metrics["kernel_sum"] == pytest.approx(truth["photometric_scale"], rel=0.01)
    assert SpatialKernel.read(out / "kernel.fits").kernel_sum == metrics["kernel_sum"]
    # Unmasked difference pixels are noise-like: clipped std of D/sigma near 1
    # (stars, galaxies and transients excluded by the clipping).
    assert abs(metrics["difference"]["clipped_std"] - 1.0) < 0.05
    for rule in ("warp", "detect", "select", "fit_single_kernels", "convolve"):
        assert (workdir / f"logs/{rule}/good.log").is_file()
        assert (workdir / f"benchmarks/{rule}/good.tsv").is_file()


def test_empty_pair_fails_alone_with_counts_and_no_partial_outputs(finished_run):
    workdir, run = finished_run
    assert run.returncode != 0
    log = (workdir / "logs/detect/empty.log").read_text()
    assert "InsufficientCandidatesError" in log
    assert "pair 'empty'" in log
    assert "detected=0" in log
    assert not (workdir / "results/empty/detect").exists() or not any(
        (workdir / "results/empty/detect").iterdir()
    )
    assert not list((workdir / "results").rglob(".tmp-*"))


def test_changing_spatial_order_reruns_only_the_steps_that_read_it(finished_run, tmp_path):
    workdir, _ = finished_run
    config = _base_config(["good"])
    config["psf_match"]["spatialKernelOrder"] = 2
    _write_config(workdir, config, ["good"])
    try:
        dry = _snakemake(workdir, "-n", "--cores", "2")
        jobs = _jobs(dry.stdout)
        assert {"spatial_fit", "assess", "final_kernel", "convolve"} <= set(jobs), dry.stdout
        assert not {"simulate", "ingest", "warp", "detect", "select", "fit_single_kernels"} & set(jobs)
    finally:
        _write_config(workdir, _base_config(["good", "empty"]), ["good", "empty"])


def test_a_delta_function_field_is_read_by_no_step_of_an_al_run(finished_run):
    workdir, _ = finished_run
    config = _base_config(["good"])
    config["psf_match"]["lambdaValue"] = 5.0
    config["psf_match"]["numPrincipalComponents"] = 4  # PCA is off for AL by default
    _write_config(workdir, config, ["good"])
    try:
        dry = _snakemake(workdir, "-n", "--cores", "2")
        assert dry.returncode == 0, dry.stdout + dry.stderr
        assert _jobs(dry.stdout) == {}, dry.stdout
    finally:
        _write_config(workdir, _base_config(["good", "empty"]), ["good", "empty"])


def _df_config() -> dict:
    config = _base_config(["good"])
    config["psf_match"].update({"kernelBasisSet": "delta-function", "lambdaValue": 1.0e4,
                                "numPrincipalComponents": 3,
                                "calculateKernelUncertainty": True})
    config["detection"]["max_candidates"] = 150
    return config


@pytest.fixture(scope="module")
def finished_df_run(tmp_path_factory):
    """The good pair through the same DAG with a delta-function basis (PCA by default)."""
    workdir = tmp_path_factory.mktemp("wf_df")
    _write_config(workdir, _df_config(), ["good"])
    run = _snakemake(workdir, "--cores", "2")
    assert run.returncode == 0, run.stdout + run.stderr
    return workdir


def test_delta_function_run_uses_the_same_steps_and_stores_uncertainties(finished_df_run):
    out = finished_df_run / "results" / "good"
    metrics = io.read_json(out / "metrics.json")
    truth = io.read_json(finished_df_run / "results/simulated/good/truth.json")
    assert metrics["basis"]["type"] == "pca"
    assert metrics["basis"]["fitting_basis"]["type"] == "delta-function"
    assert metrics["kernel_sum"] == pytest.approx(truth["photometric_scale"], rel=0.01)
    assert abs(metrics["difference"]["clipped_std"] - 1.0) < 0.05
    kernel = SpatialKernel.read(out / "kernel.fits")
    assert kernel.covariance is not None
    # the 1-sigma kernel sum is small but not zero (hundreds of bright candidates)
    assert 0 < metrics["uncertainty"]["kernel_sum_sigma"] < 0.01


@pytest.mark.parametrize(
    ("field", "value", "reran", "kept"),
    [
        ("lambdaValue", 2.0e4, {"fit_single_kernels", "spatial_fit", "final_kernel", "convolve"},
         {"simulate", "ingest", "warp", "detect", "select"}),
        ("numPrincipalComponents", 4, {"spatial_fit", "assess", "final_kernel", "convolve"},
         {"simulate", "ingest", "warp", "detect", "select", "fit_single_kernels"}),
        ("alardSigGauss", [0.8, 1.6, 3.2], set(),
         {"simulate", "ingest", "warp", "detect", "select", "fit_single_kernels", "spatial_fit"}),
    ],
)
def test_changing_a_delta_function_field_reruns_only_its_readers(finished_df_run, field, value,
                                                                  reran, kept):
    config = _df_config()
    config["psf_match"][field] = value
    _write_config(finished_df_run, config, ["good"])
    try:
        dry = _snakemake(finished_df_run, "-n", "--cores", "2")
        assert dry.returncode == 0, dry.stdout + dry.stderr
        jobs = _jobs(dry.stdout)
        assert reran <= set(jobs), dry.stdout
        assert not kept & set(jobs), dry.stdout
    finally:
        _write_config(finished_df_run, _df_config(), ["good"])


def test_typo_in_psf_match_fails_before_any_job(tmp_path):
    config = _base_config(["good"])
    config["psf_match"]["kernalSize"] = 21
    _write_config(tmp_path, config, ["good"])
    run = _snakemake(tmp_path, "-n")
    assert run.returncode != 0
    assert "kernalSize" in run.stdout + run.stderr
    assert not (tmp_path / "results").exists()


def test_out_of_range_value_fails_naming_key_and_value(tmp_path):
    config = _base_config(["good"])
    config["psf_match"]["spatialKernelOrder"] = -1
    _write_config(tmp_path, config, ["good"])
    run = _snakemake(tmp_path, "-n")
    assert run.returncode != 0
    assert "spatialKernelOrder" in run.stdout + run.stderr
    assert "-1" in run.stdout + run.stderr
