"""Run one pair through the whole image-differencing DAG in-process, subtraction modes included.

The order mirrors workflow/prepare.smk, solve.smk, difference.smk and subtract.smk: warp,
subtraction_mode, detect, [preconvolve], select, fit_single_kernels, the spatial
iterations, final_kernel, convolve, decorrelate. Each step gets what its rule's params
would carry (:func:`psfmatch.steps.fields.step_config`), and the paths its rule passes.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from tests.integration.chain import shipped_config, spatial_iterations

from psfmatch.steps.difference import convolve
from psfmatch.steps.fields import step_config
from psfmatch.steps.finalize import decorrelate
from psfmatch.steps.prepare import detect, select, warp
from psfmatch.steps.solve import fit_single_kernels
from psfmatch.steps.subtraction import preconvolve, subtraction_mode


def config_with(**sections: dict[str, Any]) -> dict[str, Any]:
    """The shipped config with some keys of some sections replaced (one level deep)."""
    config = copy.deepcopy(shipped_config())
    for name, values in sections.items():
        config[name] = {**config.get(name, {}), **values}
    return config


def run_modes_pair(workdir: Path, template: Path, science: Path, config: dict[str, Any],
                   *, start: str = "warp") -> dict[str, Path]:
    """Run the DAG of one pair from ``start`` (``"warp"`` or ``"decorrelate"``) on."""
    workdir.mkdir(parents=True, exist_ok=True)

    def params(step: str) -> dict[str, Any]:
        return step_config(step, config)

    names = ("warped.fits", "warp.json", "detect.parquet", "psf.json", "mode.json",
             "preconvolved.fits", "preconvolution_psf.fits", "select.parquet",
             "stamps.fits", "fit.parquet", "kernels.fits", "kernel.fits", "final.parquet",
             "raw.fits", "raw_metrics.json", "matched.fits", "difference.fits",
             "difference_psf.fits", "metrics.json")
    p = {name: workdir / name for name in names}
    pre = bool(config.get("difference", {}).get("preconvolution", False))
    label = f"pair {workdir.name!r}"
    fit_science = p["preconvolved.fits"] if pre else science
    if start == "warp":
        warp(template_path=template, science_path=science, output_path=p["warped.fits"],
             info_path=p["warp.json"], config=params("warp"), label=label)
        subtraction_mode(template_path=p["warped.fits"], science_path=science,
                         mode_path=p["mode.json"], config=params("subtraction_mode"),
                         label=label)
        detect(template_path=p["warped.fits"], science_path=science,
               candidates_path=p["detect.parquet"], psf_path=p["psf.json"],
               config=params("detect"), label=label, mode_path=p["mode.json"])
        if pre:
            preconvolve(science_path=science, psf_path=p["psf.json"],
                        output_path=p["preconvolved.fits"],
                        psf_output_path=p["preconvolution_psf.fits"],
                        config=params("preconvolve"), label=label)
        select(template_path=p["warped.fits"], science_path=fit_science,
               candidates_path=p["detect.parquet"], psf_path=p["psf.json"],
               output_candidates=p["select.parquet"], output_stamps=p["stamps.fits"],
               config=params("select"), label=label, mode_path=p["mode.json"])
        fit_single_kernels(candidates_path=p["select.parquet"], stamps_path=p["stamps.fits"],
                           psf_path=p["psf.json"], output_candidates=p["fit.parquet"],
                           output_kernels=p["kernels.fits"],
                           config=params("fit_single_kernels"), label=label,
                           mode_path=p["mode.json"])
        spatial_iterations(workdir, p, params, config["psf_match"]["maxSpatialIterations"],
                           label, mode_path=p["mode.json"])
        convolve(template_path=p["warped.fits"], science_path=fit_science,
                 kernel_path=p["kernel.fits"], candidates_path=p["final.parquet"],
                 difference_path=p["raw.fits"], matched_path=p["matched.fits"],
                 metrics_path=p["raw_metrics.json"], config=params("convolve"), label=label,
                 mode_path=p["mode.json"])
    decorrelate(raw_path=p["raw.fits"], raw_metrics_path=p["raw_metrics.json"],
                template_path=p["warped.fits"], science_path=science, subtracted_path=fit_science,
                kernel_path=p["kernel.fits"], mode_path=p["mode.json"], psf_path=p["psf.json"],
                output_path=p["difference.fits"], metrics_path=p["metrics.json"],
                config=params("decorrelate"), label=label,
                difference_psf_path=None if pre else p["difference_psf.fits"],
                preconvolution_psf_path=p["preconvolution_psf.fits"] if pre else None)
    return p
