"""Run the kernel steps of one pair in-process (the same step functions the DAG calls).

Used by integration tests that need the intermediate products without Snakemake's
per-job start-up cost. The order mirrors workflow/prepare.smk, solve.smk and
difference.smk; each step gets what its rule's params would carry
(:func:`psfmatch.steps.fields.step_config`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from psfmatch.steps.difference import convolve
from psfmatch.steps.fields import step_config
from psfmatch.steps.prepare import detect, select, warp
from psfmatch.steps.solve import assess, fit_single_kernels, kernel_sum_clip, spatial_fit

REPO = Path(__file__).resolve().parents[2]


def shipped_config() -> dict[str, Any]:
    """config/config.yaml as shipped."""
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def run_pair(
    workdir: Path,
    template: Path,
    science: Path,
    *,
    psf_match_overrides: dict[str, Any] | None = None,
    max_candidates: int = 1000,
    config_overrides: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Path]:
    """Run warp → … → convolve on one pair; return the paths of the products.

    ``config_overrides`` maps a section of our own (e.g. ``kernel_fit``) to keys that
    replace the shipped ones.
    """
    config = shipped_config()
    config["psf_match"] = {**config["psf_match"], **(psf_match_overrides or {})}
    for section, keys in (config_overrides or {}).items():
        config[section] = {**(config.get(section) or {}), **keys}
    config["detection"]["max_candidates"] = max_candidates

    def params(step: str) -> dict[str, Any]:
        return step_config(step, config)

    p = {name: workdir / name for name in (
        "warped.fits", "warp.json", "detect.parquet", "psf.json", "select.parquet",
        "stamps.fits", "fit.parquet", "kernels.fits", "kernel.fits", "difference.fits",
        "matched.fits", "metrics.json")}
    label = f"pair {workdir.name!r}"
    warp(template_path=template, science_path=science, output_path=p["warped.fits"],
         info_path=p["warp.json"], config=params("warp"), label=label)
    detect(template_path=p["warped.fits"], science_path=science,
           candidates_path=p["detect.parquet"], psf_path=p["psf.json"],
           config=params("detect"), label=label)
    select(template_path=p["warped.fits"], science_path=science,
           candidates_path=p["detect.parquet"], psf_path=p["psf.json"],
           output_candidates=p["select.parquet"], output_stamps=p["stamps.fits"],
           config=params("select"), label=label)
    fit_single_kernels(candidates_path=p["select.parquet"], stamps_path=p["stamps.fits"],
                       psf_path=p["psf.json"], output_candidates=p["fit.parquet"],
                       output_kernels=p["kernels.fits"], config=params("fit_single_kernels"),
                       label=label)
    spatial_iterations(workdir, p, params, config["psf_match"]["maxSpatialIterations"], label)
    convolve(template_path=p["warped.fits"], science_path=science,
             kernel_path=p["kernel.fits"], candidates_path=p["final.parquet"],
             difference_path=p["difference.fits"], matched_path=p["matched.fits"],
             metrics_path=p["metrics.json"], config=params("convolve"), label=label)
    return p


def spatial_iterations(workdir: Path, p: dict[str, Path], params: Any, n_iterations: int,
                       label: str, *, mode_path: Path | None = None) -> None:
    """kernel_sum_clip → spatial_fit → assess, ``n_iterations`` times, then final_kernel.

    Reads ``p["fit.parquet"]``, ``p["kernels.fits"]``, ``p["stamps.fits"]``; writes the
    iteration products in ``workdir`` and ``p["kernel.fits"]``, ``p["final.parquet"]``.
    ``params(step)`` gives a step's params.
    """
    previous = p["fit.parquet"]
    for i in range(n_iterations):
        ksum, kernel, spatial, assessed = (workdir / f"iter{i}_{n}" for n in (
            "ksum.parquet", "kernel.fits", "spatial.parquet", "assess.parquet"))
        kernel_sum_clip(candidates_path=previous, output_candidates=ksum,
                        config=params("kernel_sum_clip"), iteration=i, label=label)
        spatial_fit(candidates_path=ksum, kernels_path=p["kernels.fits"],
                    stamps_path=p["stamps.fits"], output_kernel=kernel,
                    output_candidates=spatial, config=params("spatial_fit"), iteration=i,
                    label=label)
        assess(candidates_path=spatial, stamps_path=p["stamps.fits"], kernel_path=kernel,
               output_candidates=assessed, config=params("assess"), iteration=i, label=label)
        previous = assessed
    p["final.parquet"] = workdir / "final.parquet"
    spatial_fit(candidates_path=previous, kernels_path=p["kernels.fits"],
                stamps_path=p["stamps.fits"], output_kernel=p["kernel.fits"],
                output_candidates=p["final.parquet"], config=params("spatial_fit"),
                iteration="final", label=label, mode_path=mode_path)
