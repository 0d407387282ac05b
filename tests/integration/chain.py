"""Run the kernel steps of one pair in-process (the same step functions the DAG calls).

Used by integration tests that need the intermediate products without Snakemake's
per-job start-up cost. The order mirrors workflow/kernel.smk.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from psfmatch import steps

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
) -> dict[str, Path]:
    """Run warp → … → convolve on one pair; return the paths of the products."""
    config = shipped_config()
    pm = {**config["psf_match"], **(psf_match_overrides or {})}
    exclude = config["detection"]["exclude_mask_planes"]
    p = {name: workdir / name for name in (
        "warped.fits", "warp.json", "detect.parquet", "psf.json", "select.parquet",
        "stamps.fits", "fit.parquet", "kernels.fits", "kernel.fits", "difference.fits",
        "matched.fits", "metrics.json")}
    label = f"pair {workdir.name!r}"
    steps.warp(template_path=template, science_path=science, output_path=p["warped.fits"],
               info_path=p["warp.json"], warping=pm["warpingConfig"],
               same_grid_tolerance=config["warp"]["same_grid_tolerance_pix"], label=label)
    steps.detect(template_path=p["warped.fits"], science_path=science,
                 candidates_path=p["detect.parquet"], psf_path=p["psf.json"], psf_match=pm,
                 background_box_size=config["detection"]["background_box_size"], label=label,
                 exclude_mask_planes=exclude)
    steps.select(template_path=p["warped.fits"], science_path=science,
                 candidates_path=p["detect.parquet"], psf_path=p["psf.json"],
                 output_candidates=p["select.parquet"], output_stamps=p["stamps.fits"],
                 psf_match=pm, min_snr=config["detection"]["min_snr"],
                 max_candidates=max_candidates, label=label, exclude_mask_planes=exclude)
    steps.fit_single_kernels(candidates_path=p["select.parquet"], stamps_path=p["stamps.fits"],
                             psf_path=p["psf.json"], output_candidates=p["fit.parquet"],
                             output_kernels=p["kernels.fits"], psf_match=pm, label=label)
    previous = p["fit.parquet"]
    for i in range(pm["maxSpatialIterations"]):
        ksum, kernel, spatial, assessed = (workdir / f"iter{i}_{n}" for n in (
            "ksum.parquet", "kernel.fits", "spatial.parquet", "assess.parquet"))
        steps.kernel_sum_clip(candidates_path=previous, output_candidates=ksum, psf_match=pm,
                              iteration=i, label=label)
        steps.spatial_fit(candidates_path=ksum, kernels_path=p["kernels.fits"],
                          stamps_path=p["stamps.fits"], output_kernel=kernel,
                          output_candidates=spatial, psf_match=pm, iteration=i, label=label)
        steps.assess(candidates_path=spatial, stamps_path=p["stamps.fits"], kernel_path=kernel,
                     output_candidates=assessed, psf_match=pm, iteration=i, label=label)
        previous = assessed
    p["final.parquet"] = workdir / "final.parquet"
    steps.spatial_fit(candidates_path=previous, kernels_path=p["kernels.fits"],
                      stamps_path=p["stamps.fits"], output_kernel=p["kernel.fits"],
                      output_candidates=p["final.parquet"], psf_match=pm, iteration="final",
                      label=label)
    steps.convolve(template_path=p["warped.fits"], science_path=science,
                   kernel_path=p["kernel.fits"], candidates_path=p["final.parquet"],
                   difference_path=p["difference.fits"], matched_path=p["matched.fits"],
                   metrics_path=p["metrics.json"], psf_match=pm, label=label)
    return p
