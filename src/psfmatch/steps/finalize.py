"""The final difference (or score) image: ``decorrelate`` (ip_diffim's ``finalize``).

After ``convolve`` wrote the raw difference, this step rescales the input variance
planes (``doScaleVariance``), whitens the difference with the decorrelation afterburner
(``doDecorrelation``; for the preconvolution variant the score image), and writes the
products users take: ``difference.fits`` (or ``score.fits``), the PSF of the final
difference ``difference_psf.fits``, and ``metrics.json`` (docs/subtraction-modes.md).
It is its own rule so that toggling ``doDecorrelation`` reruns only it and what follows.

Memory: the two inputs are measured one after the other (sources flagged, variance
factor, mean variances: numbers are kept, not images), then the raw difference is
whitened, written and summarised band by band (:mod:`psfmatch.decorrelate_bands`). The
preconvolution variant runs on whole images (:mod:`psfmatch.steps.finalize_whole`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import numpy as np

from psfmatch import io
from psfmatch.convolve_bands import band_ranges
from psfmatch.decorrelate_bands import BandWhitener, finite_mean
from psfmatch.decorrelation import IGNORE_MASK_PLANES, finish_record, whitening_plan
from psfmatch.diagnostics import normalised_residual, residual_summary
from psfmatch.modes import CONVOLVE_SCIENCE, CONVOLVE_TEMPLATE
from psfmatch.scale_variance import VarianceScale
from psfmatch.steps.fields import StepConfig
from psfmatch.steps.finalize_whole import (
    FILTER_EXCLUDED_PLANES,
    decorrelate_whole,
    depths,
    flag_sources_and_scale,
    mean_axis_fwhm,
    mode_metrics,
    rescaled_raw_variance,
    zero_point,
)
from psfmatch.steps.subtraction import psf_image_at, read_mode

__all__ = ["decorrelate"]

logger = logging.getLogger("psfmatch.steps")

#: Rows per band of the whitening pass.
BAND_ROWS = 512


@dataclass
class _Input:
    """What the whitening needs of one input image (no pixels)."""

    scale: VarianceScale
    mean_variance: float  # for the filter (subtract.decorrelate.ignoreMaskPlanes)
    depth_variance: float  # for the depth (the default ignored planes)
    fill: float  # mean of the finite pixels of the rescaled variance plane
    psf: Any
    bbox: tuple[int, int, int, int]
    metadata: dict[str, Any]


def _measure(path: str, role: str, fwhm: float, sub: Any, label: str) -> _Input:
    """Sources flagged, the variance factor and the mean variances of one input image."""
    from psfmatch.decorrelation import mean_variance

    marked, scale = flag_sources_and_scale(io.read_exposure(path), role=role, fwhm=fwhm, sub=sub,
                                           label=label)
    scaled = marked.with_(variance=(marked.variance * scale.factor).astype(np.float32))
    fill = finite_mean(scaled.variance[np.isfinite(scaled.variance)])
    ignored = tuple(sub.decorrelate.ignore_mask_planes)
    for_filter = mean_variance(scaled, ignore_mask_planes=ignored)
    for_depth = for_filter if ignored == tuple(IGNORE_MASK_PLANES) else mean_variance(scaled)
    return _Input(scale=scale, mean_variance=for_filter, depth_variance=for_depth, fill=fill,
                  psf=marked.psf, bbox=marked.bbox, metadata=dict(marked.metadata))


def decorrelate(
    *,
    raw_path: str,
    raw_metrics_path: str,
    template_path: str,
    science_path: str,
    subtracted_path: str,
    kernel_path: str,
    mode_path: str,
    psf_path: str,
    output_path: str,
    metrics_path: str,
    config: Mapping[str, Any],
    label: str,
    difference_psf_path: str | None = None,
    preconvolution_psf_path: str | None = None,
) -> None:
    """Variance rescaling, decorrelation, the final products and ``metrics.json``.

    Parameters and products as :func:`psfmatch.steps.finalize_whole.decorrelate_whole`
    (whose notes give the maths); the result is the same up to the float64 rounding of
    the band-sized transforms (below the float32 resolution of the products). With
    ``difference.preconvolution`` the whole-image form runs.
    """
    args = {k: v for k, v in locals().items()}
    mode = read_mode(mode_path)
    if mode.get("preconvolution"):
        decorrelate_whole(**args)
        return
    cfg = StepConfig("decorrelate", config)
    sub, diff = cfg.subtract, cfg.difference
    kernel = io.read_kernel(kernel_path)
    metrics = io.read_json(raw_metrics_path)
    fwhm = {role: float(v["fwhm"]) for role, v in io.read_json(psf_path).items()
            if role in ("template", "science")}
    inputs = {role: _measure(path, role, fwhm[role], sub, label)
              for role, path in (("template", template_path), ("science", science_path))}
    scales = {role: item.scale for role, item in inputs.items()}
    if sub.do_scale_variance:
        logger.info("%s: variance scale factors template %.4f (%s), science %.4f (%s)", label,
                    scales["template"].factor, scales["template"].method,
                    scales["science"].factor, scales["science"].method)
    unconvolved = "science" if mode["mode"] == CONVOLVE_TEMPLATE else "template"
    convolved = "template" if unconvolved == "science" else "science"
    psf_in, psf_source = psf_image_at(inputs[unconvolved].psf, inputs[unconvolved].bbox,
                                      fwhm[unconvolved])
    info: dict[str, Any] = {"applied": False, "psf_source": psf_source}
    final_psf, final_stats, n_flagged, variance_final = _whiten_bands(
        args, mode, kernel, inputs, sub, diff, info, psf_in, unconvolved, convolved)
    psf_out = np.asarray(final_psf, dtype=np.float64) / float(np.sum(final_psf))
    info["psf_fwhm_before"] = mean_axis_fwhm(psf_in)
    info["psf_fwhm_after"] = mean_axis_fwhm(psf_out)
    if info["applied"]:
        info["pixels_not_filtered"] = {"planes": list(FILTER_EXCLUDED_PLANES), "n": n_flagged}
    logger.info("%s: %s; D/sigma clipped std %.4f (raw %.4f)", label,
                "decorrelated" if info["applied"] else "not decorrelated",
                final_stats["clipped_std"], metrics["difference"]["clipped_std"])
    zp = zero_point(diff, inputs["science"].metadata, label)
    metrics.update(mode_metrics(mode, scales, fwhm))
    metrics["difference_before_decorrelation"] = metrics["difference"]
    metrics["difference"] = {**final_stats, "image": "difference"}
    metrics["decorrelation"] = info
    variances = {"science": inputs["science"].depth_variance,
                 "template": inputs["template"].depth_variance, "difference": variance_final}
    metrics["depth"] = depths(variances, psf_in=psf_in, psf_out=psf_out, mode=mode,
                              kernel_sum=float(kernel.kernel_sum), zero_point=zp,
                              psfs={r: (i.psf, i.bbox) for r, i in inputs.items()}, fwhm=fwhm,
                              preconvolved=False)
    if difference_psf_path is not None:
        io.write_psf_image(difference_psf_path, psf_out, metadata={
            "PSFSRC": psf_source, "DECORREL": bool(info["applied"]),
            "PSFOF": unconvolved, "PSFFWHM": info["psf_fwhm_after"]})
    io.write_json(metrics_path, metrics)


def _whiten_bands(args: dict[str, Any], mode: Mapping[str, Any], kernel: Any,
                  inputs: Mapping[str, _Input], sub: Any, diff: Any, info: dict[str, Any],
                  psf_in: np.ndarray, unconvolved: str, convolved: str
                  ) -> tuple[np.ndarray, dict[str, Any], int, float]:
    """Rescale, whiten and write the raw difference band by band.

    Returns the final PSF (before normalisation), the residual statistics, the number of
    pixels kept out of the filter and the final image's clipped mean variance.
    """
    from psfmatch.psf import ImagePsf

    f = {role: item.scale.factor for role, item in inputs.items()}
    grid = tuple(int(g) for g in diff.decorrelation_grid)
    with ExitStack() as stack:
        raw = stack.enter_context(io.open_exposure_rows(args["raw_path"]))
        planes = {"template": stack.enter_context(io.open_exposure_rows(args["template_path"])),
                  "science": stack.enter_context(io.open_exposure_rows(args["science_path"]))}
        x0, y0 = raw.xy0
        ny, nx = raw.shape
        bbox = (x0, y0, x0 + nx - 1, y0 + ny - 1)
        norm = None
        if mode["mode"] == CONVOLVE_SCIENCE:
            norm = kernel.sum_at_centre_of(bbox)
        whitener, psf_out = None, psf_in
        if sub.do_decorrelation:
            plan = whitening_plan(bbox, kernel_at=kernel.image_at, mode=mode["mode"], grid=grid,
                                  science_variance=inputs["science"].mean_variance,
                                  template_variance=inputs["template"].mean_variance,
                                  complete_variance=sub.decorrelate.complete_var_plane_propagation)
            if norm is not None and "skipped" not in plan.info:
                plan.info["norm"] = norm
            info.update({k: v for k, v in plan.info.items() if k != "filters"})
            if "skipped" in plan.info:
                info["filters"] = []
                logger.warning("%s: decorrelation skipped: %s", args["label"],
                               plan.info["skipped"])
            else:
                whitener = BandWhitener(
                    plan, raw.shape, raw.xy0,
                    complete_variance=sub.decorrelate.complete_var_plane_propagation,
                    norm=norm, fills={"image": _image_fill(raw),
                                      "unconvolved": inputs[unconvolved].fill,
                                      "convolved": inputs[convolved].fill})
                psf_out = finish_record(plan, psf_in)
                info.update({k: v for k, v in plan.info.items()})
                info["applied"] = True
        final_psf = np.asarray(psf_out, dtype=np.float64) / float(np.sum(psf_out))
        writer = stack.enter_context(io.exposure_writer(
            args["output_path"], shape=raw.shape, metadata=raw.metadata, wcs=raw.wcs,
            xy0=raw.xy0, mask_planes=raw.mask_planes,
            psf_image=np.asarray(ImagePsf(final_psf).image, dtype=np.float64)))
        z = np.empty(ny * nx, dtype=np.float32)
        good_var = np.empty(ny * nx, dtype=np.float32)
        n_z = n_usable = n_var = n_flagged = 0
        for start, stop in band_ranges(ny, BAND_ROWS):
            lo, hi = whitener.rows_needed(start, stop) if whitener else (start, stop)
            rows = raw.rows(lo, hi)
            core = slice(start - lo, stop - lo)
            # each input band is read once: the whitener needs both (with its halo), the
            # variance rescaling the one whose variance the raw difference carries
            known_role = "template" if norm is not None else "science"
            read = {role: planes[role].rows(lo, hi)
                    for role in (planes if whitener is not None else (known_role,))}
            known = read[known_role].variance[core]
            if norm is not None:
                known = known / norm**2
            band = rows.with_(image=rows.image[core], mask=rows.mask[core],
                              variance=rows.variance[core], xy0=(x0, y0 + start))
            band = rescaled_raw_variance(band, known,
                                         *((f["template"], f["science"]) if norm is not None
                                           else (f["science"], f["template"])))
            if whitener is not None:
                flagged = (rows.mask & rows.plane_bitmask(FILTER_EXCLUDED_PLANES)) != 0
                filtered = np.where(flagged, np.nan, rows.image).astype(np.float32)
                variances = {role: (read[role].variance * f[role]).astype(np.float32)
                             for role in planes}
                image, variance = whitener.whiten(
                    image=filtered, unconvolved=variances[unconvolved],
                    convolved=variances[convolved], difference_variance=band.variance,
                    start=start, stop=stop)
                image[flagged[core]] = band.image[flagged[core]]
                n_flagged += int(np.count_nonzero(flagged[core]))
                band = band.with_(image=image, variance=variance)
            writer.write(start, band)
            values, usable = normalised_residual(band)
            z[n_z : n_z + values.size] = values
            n_z += values.size
            n_usable += int(np.count_nonzero(usable))
            bits = band.plane_bitmask(IGNORE_MASK_PLANES)
            good = ((band.mask & bits) == 0) & np.isfinite(band.variance) \
                & np.isfinite(band.image)
            part = band.variance[good]
            good_var[n_var : n_var + part.size] = part
            n_var += part.size
        stats = residual_summary(z[:n_z], n_usable=n_usable, n_total=ny * nx)
        del z
        variance_final = _clipped_mean(good_var[:n_var])
    return psf_out, stats, n_flagged, variance_final


def _clipped_mean(values: np.ndarray) -> float:
    """:func:`psfmatch.decorrelation.mean_variance` of the gathered good variances."""
    from psfmatch.stats import clipped_mean_std

    return clipped_mean_std(values)[0]


def _image_fill(raw: Any) -> float:
    """Mean of the finite pixels of the raw difference left for the filter (whole image)."""
    ny, nx = raw.shape
    values = np.empty(ny * nx, dtype=np.float64)
    n = 0
    for start, stop in band_ranges(ny, BAND_ROWS):
        rows = raw.rows(start, stop)
        flagged = (rows.mask & rows.plane_bitmask(FILTER_EXCLUDED_PLANES)) != 0
        image = np.where(flagged, np.nan, rows.image).astype(np.float32)
        part = image[np.isfinite(image)]
        values[n : n + part.size] = part
        n += part.size
    return finite_mean(values[:n])
