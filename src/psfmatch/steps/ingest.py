"""Reading a pair's inputs: ``ingest`` (any supported layout in, the afw layout out)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from psfmatch import io
from psfmatch.errors import ExposureError, InputFileError
from psfmatch.exposure import flag_unusable_variance
from psfmatch.psf import ImagePsf
from psfmatch.saturation import mark_estimated_saturation
from psfmatch.steps.fields import StepConfig

__all__ = ["ingest"]

logger = logging.getLogger("psfmatch.steps")


def ingest(
    *,
    inputs: Mapping[str, str],
    output_path: str,
    label: str,
    reader: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
) -> None:
    """Read one input image in any supported layout and write it in the afw layout.

    Parameters
    ----------
    inputs : mapping
        ``image`` and optionally ``variance``, ``weight``, ``error``, ``mask``, ``psf``
        paths (as in the pairs sheet).
    output_path : str
        Destination (afw MEF).
    reader : mapping, optional
        The sheet row's reader options for this role (:func:`psfmatch.io.open_exposure`:
        ``mask_convention``, ``gain``, ``layout``, ``hdu``, ``saturation``), and
        ``missing``: ``{sheet column: message}`` of input files the sheet names but that
        do not exist; any entry fails this pair's job with :class:`InputFileError`.
    label : str
        Names the pair and role in errors and logs.
    config : mapping, optional
        The rule's params (``kernel_fit.estimate_saturation``): with it (the default),
        an image without any ``SAT`` pixel and without a known level gets a level
        estimated from its brightest peaks, if they pile up
        (:func:`psfmatch.saturation.mark_estimated_saturation`).

    Raw integer images become float32 (``BZERO``/``BSCALE`` applied); pixels at or above
    the saturation level (sheet, else header ``SATURATE``/``SATURATN``) are flagged
    ``SAT``; an estimated variance and the saturation level are recorded in the metadata
    (:mod:`psfmatch.provenance`), whence ``metrics.json`` and the run summary report them.
    Otherwise image, mask and variance are copied unchanged (apart from dtype: float32/int32);
    non-finite image pixels and pixels with a variance <= 0 or non-finite are flagged
    ``NO_DATA`` (variance +inf). A spatially varying PSF model (PSFEx) is written as its
    image at the centre of the image, with a logged note.

    Raises
    ------
    InputFileError, ExposureError
        Unreadable or inconsistent inputs (named with ``label``), or an image without a
        single usable pixel (all non-finite, all flagged or no valid variance).
    """
    reader = dict(reader or {})
    missing = reader.get("missing") or {}
    if missing:
        raise InputFileError(f"{label}: " + "; ".join(missing.values()))
    exposure = io.open_exposure(inputs, reader, label=label)
    if exposure.psf is not None and not hasattr(exposure.psf, "image"):
        x0, y0, x1, y1 = exposure.bbox
        centre = ((x0 + x1) / 2.0, (y0 + y1) / 2.0)
        logger.info("%s: PSF model %s kept as its image at the centre %s", label,
                    type(exposure.psf).__name__, centre)
        exposure = exposure.with_(psf=ImagePsf(exposure.psf.image_at(*centre)))
    n_bad_variance = int(np.count_nonzero(~(exposure.variance > 0)))  # NaN compares False
    exposure, n_flagged = flag_unusable_variance(exposure)
    if n_flagged:
        logger.warning("%s: %d pixels have a variance <= 0 or not finite; flagged NO_DATA, "
                       "variance +inf", label, n_flagged)
    if StepConfig("ingest", config).kernel_fit.estimate_saturation:
        exposure = mark_estimated_saturation(exposure, label=label)
    usable = np.isfinite(exposure.image) & (exposure.mask == 0)
    if not usable.any():
        flagged = {name: int(np.count_nonzero(exposure.plane(name)))
                   for name in exposure.mask_planes}
        msg = (f"{label}: {inputs['image']} has no usable pixel: all {exposure.image.size} "
               f"pixels are non-finite or flagged (pixels per plane: "
               f"{({k: v for k, v in flagged.items() if v})}; non-finite image values: "
               f"{int(np.count_nonzero(~np.isfinite(exposure.image)))}; "
               f"variance <= 0 or NaN: {n_bad_variance})")
        raise ExposureError(msg)
    finite_variance = np.isfinite(exposure.variance)
    logger.info(
        "%s: %s, planes %s, %.1f%% pixels unflagged, median variance %.4g",
        label, exposure.shape, sorted(exposure.mask_planes), 100.0 * usable.mean(),
        float(np.nanmedian(exposure.variance[finite_variance])) if finite_variance.any()
        else float("nan"),
    )
    # an input already in the afw layout that needed no change is copied byte for byte
    # (decided by comparing what would be written with the input file)
    aux = [k for k in inputs if k not in ("image", "psf")]
    io.write_exposure(output_path, exposure,
                      same_as=None if aux or inputs.get("psf") else inputs["image"])
