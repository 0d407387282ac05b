"""QA of a pair (rule ``qa``): ip_diffim's debug displays as PNGs.

The plotting itself is :mod:`psfmatch.qa` (arrays in, figures out); :func:`qa` reads the
products and writes the PNGs. The run summary is :mod:`psfmatch.steps.summary`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from psfmatch import io
from psfmatch.candidates import active_set, worst_candidates
from psfmatch.diagnostics import normalised_residual
from psfmatch.errors import PsfMatchError
from psfmatch.exposure import planes_bitmask
from psfmatch.qa import qa_plot_keys
from psfmatch.qa.images import candidates_plot, images_plot
from psfmatch.qa.kernels import basis_plot, kernel_sum_plot, mosaic_plot, spatial_model_plot
from psfmatch.qa.residuals import residual_histogram_plot, worst_stamps_plot
from psfmatch.steps.fields import StepConfig

__all__ = ["qa"]

logger = logging.getLogger("psfmatch.steps")

def qa(
    *,
    science_path: str,
    template_path: str,
    difference_path: str,
    kernel_path: str,
    candidates_path: str,
    ksum_paths: list[str] | tuple[str, ...],
    stamps_path: str,
    metrics_path: str,
    outputs: Mapping[str, str],
    config: Mapping[str, Any],
    label: str,
    n_worst: int = 6,
) -> dict[str, Any]:
    """Draw the QA plots of one pair from its products and write them as PNGs.

    ``outputs`` maps every key of :data:`psfmatch.qa.QA_PLOTS` that this rule draws
    (``qa_plot_keys("qa")``) to a path.
    ``candidates_path`` is the final candidate table (every candidate with its status,
    stage and reason); ``ksum_paths`` the kernel-sum tables of all iterations (their
    metadata hold the clipping passes). Returns the :class:`~psfmatch.qa._common.QaPlot`
    of every plot (figure and the data it shows), keyed as ``outputs``, so that callers
    can check them.
    """
    missing = sorted(set(qa_plot_keys("qa")) - set(outputs))
    if missing:
        raise PsfMatchError(f"{label}: QA outputs {missing} not given")
    pm = StepConfig("qa", config).psf_match
    science = io.read_exposure(science_path)
    template = io.read_exposure(template_path)
    difference = io.read_exposure(difference_path)
    kernel = io.read_kernel(kernel_path)
    table = io.read_table(candidates_path)
    columns = table.columns
    metrics = io.read_json(metrics_path)
    drawn: dict[str, Any] = {}

    def save(key: str, plot) -> None:
        io.write_figure(outputs[key], plot.figure)
        drawn[key] = plot

    mode = metrics.get("mode") or {}
    save("images", images_plot(science.image, template.image, difference.image,
                               xy0=science.xy0, title=label, convolved=mode.get("convolved"),
                               difference_name=metrics.get("difference", {}).get(
                                   "image", "difference")))
    good = columns["status"] == "GOOD"
    used = active_set(columns["cell"], columns["rank"], good, pm.n_star_per_cell)
    region = table.metadata.get("region") or list(science.bbox)
    save("candidates", candidates_plot(
        science.image, x=columns["x"], y=columns["y"], status=columns["status"],
        stage=columns["stage"], reason=columns["reason"], used=used, region=region,
        size_cell_x=pm.size_cell_x, size_cell_y=pm.size_cell_y, xy0=science.xy0,
        title=f"{label}: kernel candidates and spatial cells"))
    basis = kernel.metadata.get("basis") or {}
    save("kernel_basis", basis_plot(kernel.basis, description=str(basis.get("type", ""))))
    save("kernel_mosaic", mosaic_plot(kernel))
    save("spatial_model", spatial_model_plot(kernel))
    passes = {}
    for path in ksum_paths:
        meta = io.read_table(path).metadata
        passes[int(meta.get("iteration", len(passes)))] = meta.get("kernel_sum_passes", [])
    save("kernel_sum", kernel_sum_plot(
        columns["kernel_sum"], stage=columns["stage"], passes=passes, final_sum=kernel.kernel_sum))
    z, _ = normalised_residual(difference)
    stats = metrics.get("difference", {})
    save("residual_histogram", residual_histogram_plot(
        z, clipped=(stats["clipped_mean"], stats["clipped_std"]) if "clipped_std" in stats
        else None))

    # Worst candidates under the final kernel: every candidate with a stamp, ranked by
    # the rms of (S - K*T - bg)/sigma over its unmasked valid pixels.
    t_stamps, s_stamps, ids, meta = io.read_stamps(stamps_path)
    row_of = {int(i): r for r, i in enumerate(columns["id"])}
    rows = np.array([row_of[int(i)] for i in ids], dtype=np.int64)
    worst = worst_candidates(
        t_stamps, s_stamps, kernel, columns["x"][rows], columns["y"][rows],
        bad_bits=planes_bitmask(meta["mask_planes"].values(), pm.bad_mask_planes), n=n_worst)
    half = kernel.kernel_size // 2
    crop = (slice(half, -half or None), slice(half, -half or None))
    models, sciences, residuals, names = [], [], [], []
    for item in worst:
        r = rows[item.index]
        s_img = np.asarray(s_stamps[0][item.index], dtype=np.float64)[crop]
        models.append(s_img - item.difference)
        sciences.append(s_img)
        with np.errstate(invalid="ignore", divide="ignore"):
            residuals.append(item.difference / np.sqrt(item.variance))
        status = str(columns["status"][r])
        names.append(status if status == "GOOD" else f"BAD ({columns['stage'][r]})")
    save("worst_stamps", worst_stamps_plot(
        ids=np.array([int(columns["id"][rows[item.index]]) for item in worst], dtype=np.int64),
        scores=np.array([item.score for item in worst]), score_name="residual rms (σ)",
        models=models, sciences=sciences, residuals=residuals, labels=names))
    logger.info("%s: wrote %d QA plots", label, len(drawn))
    return drawn
