"""Conversions from the layouts users bring to psfmatch's exposure model.

Header cards to metadata, the header WCS and ``xy0``, external data-quality images to
named mask planes (ZTF bits, DECam Community Pipeline codes, "non-zero is bad"), the
variance estimated from GAIN/RDNOISE when no map is given, and the extensions of an
afw-layout file. Used by :mod:`psfmatch.io.exposures`.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from psfmatch.errors import ConfigError, ExposureError, InputFileError
from psfmatch.exposure import DEFAULT_MASK_PLANES, MAX_MASK_BIT
from psfmatch.io._cards import STRUCTURAL_CARDS, WCS_CARDS
from psfmatch.io._fits import Hdu, check_2d, find_hdu, load_fits, where_in
from psfmatch.io._raw import DECAM_CP_MASK_VALUES, ZTF_MASK_BITS
from psfmatch.psf import ImagePsf

__all__ = [
    "DECAM_CP_MASK_VALUES",
    "ZTF_MASK_BITS",
    "add_plane",
    "afw_extensions",
    "aux_image",
    "convert_mask",
    "estimate_variance",
    "header_metadata",
    "header_xy0",
    "wcs_from_header",
]

logger = logging.getLogger("psfmatch.io")



def aux_image(path: Any, shape: tuple[int, ...], what: str, image_where: str) -> np.ndarray:
    """First 2-D image of an auxiliary file (variance, weight, error, mask)."""
    apath, hdus = load_fits(path, what)
    hdu = find_hdu(apath, hdus, None, what)
    data = check_2d(apath, hdu, what, floating=False)
    if data.shape != shape:
        msg = (f"{what} {where_in(apath, hdu)} has shape {data.shape}; "
               f"image {image_where} has {shape}")
        raise ExposureError(msg)
    return data


def header_metadata(*headers: fits.Header) -> dict[str, Any]:
    """Non-structural, non-WCS cards as name -> str/int/float/bool (later headers win)."""
    meta: dict[str, Any] = {}
    for header in headers:
        for key, value in header.items():
            if not key or STRUCTURAL_CARDS.match(key) or WCS_CARDS.match(key):
                continue
            if isinstance(value, bool | int | float | str):
                meta[key] = value
    return meta


def wcs_from_header(header: fits.Header, where: str) -> WCS | None:
    """Celestial WCS of ``header`` (TPV, SIP, ...), or None when it has none."""
    if "CTYPE1" not in header and "CTYPE2" not in header:
        return None
    with warnings.catch_warnings():
        # wcslib's harmless fix-ups (RADECSYS -> RADESYS, DATE-OBS -> MJD-OBS, OBSGEO).
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            wcs = WCS(header, relax=True)
        except Exception as exc:
            raise InputFileError(f"{where} has an invalid WCS: {exc}") from exc
    if not wcs.has_celestial:
        return None
    return wcs if wcs.naxis == 2 else wcs.celestial


def header_xy0(header: fits.Header) -> tuple[int, int]:
    if "LTV1" in header or "LTV2" in header:
        return (int(round(-header.get("LTV1", 0.0))), int(round(-header.get("LTV2", 0.0))))
    if str(header.get("WCSNAMEA", "")).strip().upper() == "PHYSICAL":
        return (int(round(header.get("CRVAL1A", 0.0))), int(round(header.get("CRVAL2A", 0.0))))
    return (0, 0)


def add_plane(planes: dict[str, int], name: str) -> int:
    if name not in planes:
        free = sorted(set(range(MAX_MASK_BIT + 1)) - set(planes.values()))
        if not free:
            raise ExposureError(f"no free mask bit left for plane {name!r}")
        planes[name] = free[0]
    return planes[name]


def convert_mask(
    raw: np.ndarray,
    planes: dict[str, int],
    where: str,
    mask_bits: Mapping[int, str] | None,
    mask_values: Mapping[int, str] | None,
) -> np.ndarray:
    """Turn an external data-quality image into LSST-style bit planes."""
    raw = np.asarray(raw)
    if np.issubdtype(raw.dtype, np.floating) and not np.all(
            np.isfinite(raw) & (raw == np.round(raw))):
        raise InputFileError(f"mask {where} has non-integer values")
    raw = raw.astype(np.int64)
    mask = np.zeros(raw.shape, dtype=np.int32)
    if mask_bits is not None:
        mapped = 0
        for bit, name in mask_bits.items():
            mapped |= 1 << int(bit)
            hit = (raw >> int(bit)) & 1 != 0
            mask[hit] |= np.int32(1 << add_plane(planes, name))
        unmapped = raw & ~mapped
    elif mask_values is not None:
        unmapped = raw.copy()
        for code, name in mask_values.items():
            hit = raw == int(code)
            mask[hit] |= np.int32(1 << add_plane(planes, name))
            unmapped[hit] = 0
    else:
        mask[raw != 0] |= np.int32(1 << add_plane(planes, "BAD"))
        unmapped = np.zeros_like(raw)
    if np.any(unmapped):
        if mask_bits is not None:
            label, kinds = "bits", [b for b in range(63) if np.any((unmapped >> b) & 1)]
        else:
            label, kinds = "codes", [int(v) for v in np.unique(unmapped) if v]
        logger.warning(
            "mask %s: %d pixels carry unmapped %s %s; ignored",
            where, int(np.count_nonzero(unmapped)), label, kinds,
        )
    return mask


def estimate_variance(
    image: np.ndarray, header: Mapping[str, Any], where: str, gain: float | None,
    read_noise: float | None,
) -> tuple[np.ndarray, str]:
    r"""Poisson + read-noise variance, logged as an estimate (see :func:`read_exposure`).

    :math:`V = \max(I + s, 0)/g + (r/g)^2` (ADU²) with the gain :math:`g` (e⁻/ADU: the
    ``gain`` argument, else header ``GAIN``/``GAINA``), the read noise :math:`r` (e⁻:
    ``read_noise``, else ``RDNOISE``/``READNOI``, else 0) and :math:`s` the sky added
    back: header ``AVSKY``/``SKYLEVEL`` when the image median is below half of it (a
    sky-subtracted image), else 0. Non-finite pixels get :math:`+\infty`.

    Returns
    -------
    variance : numpy.ndarray
        float64, the image's shape.
    note : str
        What the estimate was made from (for the exposure's metadata and the run summary).
    """
    source = "gain argument"
    if gain is None:
        for key in ("GAIN", "GAINA"):
            if isinstance(header.get(key), int | float) and not isinstance(header[key], bool):
                gain, source = float(header[key]), f"header {key}"
                break
    if gain is None:
        msg = (
            f"image {where} has no variance, weight or error map and no GAIN/GAINA card; "
            "give gain= (e-/ADU) or a variance/weight/error file"
        )
        raise InputFileError(msg)
    if not (np.isfinite(gain) and gain > 0):
        error_type = InputFileError if source.startswith("header") else ConfigError
        raise error_type(f"gain for {where} ({source}) must be finite and > 0, got {gain!r}")
    rn_source = "read_noise argument"
    if read_noise is None:
        read_noise, rn_source = 0.0, "default 0"
        for key in ("RDNOISE", "READNOI"):
            if isinstance(header.get(key), int | float) and not isinstance(header[key], bool):
                read_noise, rn_source = float(header[key]), f"header {key}"
                break
    median = float(np.nanmedian(image)) if np.any(np.isfinite(image)) else 0.0
    sky_removed, sky_note = 0.0, f"image assumed to contain its sky (median {median:.6g})"
    for key in ("AVSKY", "SKYLEVEL"):
        value = header.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            if median < 0.5 * float(value):
                sky_removed = float(value)
                sky_note = f"sky-subtracted image: adding back header {key}={value:.6g}"
            break
    counts = np.maximum(image.astype(np.float64) + sky_removed, 0.0)
    variance = counts / gain + (float(read_noise) / gain) ** 2
    variance[~np.isfinite(image)] = np.inf
    note = (f"estimated from gain {gain:.6g} e-/ADU ({source}), read noise "
            f"{float(read_noise):.6g} e- ({rn_source}); {sky_note}")
    logger.warning("variance of %s %s", where, note)
    return variance, note


def afw_extensions(
    path: Path, hdus: list[Hdu], shape: tuple[int, ...], where: str
) -> tuple[np.ndarray | None, np.ndarray | None, dict[str, int], ImagePsf | None]:
    """MASK (with its ``MP_*`` planes), VARIANCE and PSF of an afw-layout file."""
    by_name = {h.name: h for h in hdus}
    arrays: dict[str, np.ndarray | None] = {"MASK": None, "VARIANCE": None}
    planes = dict(DEFAULT_MASK_PLANES)
    for ext in arrays:
        if ext not in by_name:
            continue
        arr = check_2d(path, by_name[ext], ext, floating=ext == "VARIANCE")
        ext_where = where_in(path, by_name[ext])
        if arr.shape != shape:
            raise ExposureError(f"{ext} {ext_where} has shape {arr.shape}; {where} has {shape}")
        arrays[ext] = arr
        if ext == "MASK":
            cards = {k[3:]: v for k, v in by_name[ext].header.items() if k.startswith("MP_")}
            if any(not isinstance(v, int) or isinstance(v, bool) for v in cards.values()):
                raise InputFileError(f"MASK {ext_where} has non-integer MP_ cards {cards}")
            planes = cards or planes
    psf = None
    if "PSF" in by_name and by_name["PSF"].data is not None:
        try:
            psf = ImagePsf(by_name["PSF"].data)
        except ExposureError as exc:
            raise InputFileError(f"PSF {where_in(path, by_name['PSF'])}: {exc}") from exc
    return arrays["MASK"], arrays["VARIANCE"], planes, psf


