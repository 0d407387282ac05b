"""Detect and measure DIA sources on difference images (arrays in, columns out).

Public entry points:

* :func:`detect_and_measure` → :class:`DiaCatalogue` (columns, units, flag bits,
  metadata);
* :func:`make_cutouts` → science / matched template / difference stamps per source;
* :class:`DiaOptions`: the step's options;
* :class:`BadSubtractionError`: raised by the quality gate;
* PSF helpers :func:`gaussian_psf_image`, :func:`empirical_psf`, :func:`psf_image`;
* :data:`FLAG_BITS`, :func:`decode_flags`: the flag bit mask.

No function here reads or writes files.
"""

from psfmatch.config.dia import DiaOptions
from psfmatch.dia.catalogue import (
    COLUMNS,
    DiaCatalogue,
    detect_and_measure,
    empty_columns,
    forced_psf_flux,
)
from psfmatch.dia.cutouts import make_cutouts
from psfmatch.dia.filtering import matched_filter, noise_peak_density
from psfmatch.dia.flags import FLAG_BITS, FLAG_DESCRIPTIONS, decode_flags
from psfmatch.dia.gate import BadSubtractionError
from psfmatch.dia.psf import empirical_psf, gaussian_psf_image, psf_image

__all__ = [
    "COLUMNS",
    "FLAG_BITS",
    "FLAG_DESCRIPTIONS",
    "BadSubtractionError",
    "DiaCatalogue",
    "DiaOptions",
    "decode_flags",
    "detect_and_measure",
    "empirical_psf",
    "empty_columns",
    "forced_psf_flux",
    "gaussian_psf_image",
    "make_cutouts",
    "matched_filter",
    "noise_peak_density",
    "psf_image",
]
