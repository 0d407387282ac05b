"""Exposures: read any supported layout, write the afw layout.

Exposures are written in the LSST afw multi-extension layout (PRIMARY with the
metadata, then ``IMAGE``/``MASK``/``VARIANCE`` and optionally ``PSF``) and read either
from that layout or from a single-HDU image plus optional variance / weight / error /
mask files. The WCS of an exposure is the FITS-header WCS of its *array* (astropy
0-based pixel ``(x, y)`` = array ``[y, x]``), not shifted by ``xy0``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from psfmatch.errors import ConfigError, ExposureError, InputFileError, PsfMatchError
from psfmatch.exposure import DEFAULT_MASK_PLANES, Exposure
from psfmatch.io._afw import (
    exposure_hdus,
    read_afw,
    read_grid,
    read_mask,
    same_file_content,
)
from psfmatch.io._afw import wcs_cards as wcs_card_images
from psfmatch.io._files import copy_product
from psfmatch.io._lite import LiteUnsupportedError, write_file
from psfmatch.io._raw import (
    DECAM_CP_MASK_VALUES,
    NOTE_CARDS,
    ZTF_MASK_BITS,
    flag_saturated,
    saturation_level,
)

__all__ = [
    "MASK_CONVENTIONS",
    "open_exposure",
    "read_exposure",
    "same_pixel_grid",
    "write_exposure",
]

logger = logging.getLogger("psfmatch.io")


# ---------------------------------------------------------------------- exposures
def read_exposure(
    path: str | os.PathLike[str],
    *,
    variance: str | os.PathLike[str] | None = None,
    weight: str | os.PathLike[str] | None = None,
    error: str | os.PathLike[str] | None = None,
    mask: str | os.PathLike[str] | None = None,
    mask_bits: Mapping[int, str] | None = None,
    mask_values: Mapping[int, str] | None = None,
    gain: float | None = None,
    read_noise: float | None = None,
    hdu: int | str | None = None,
    layout: str = "auto",
    saturation: float | str | None = None,
) -> Exposure:
    """Read an exposure from an afw-layout MEF or from a single-HDU image.

    Parameters
    ----------
    path : path-like
        FITS file (``.gz`` allowed). When it has an ``IMAGE`` extension (or
        ``hdu="IMAGE"``), it is read in the afw layout: mask planes from the ``MP_*``
        cards of ``MASK`` (afw defaults when absent), ``VARIANCE`` used as is,
        metadata from PRIMARY plus ``IMAGE``. Otherwise the image is the HDU ``hdu``
        (name or index) or the first HDU with data.
    variance, weight, error : path-like, optional
        At most one: a variance map, an inverse-variance map or a 1-sigma map. Pixels
        whose weight, error or variance is <= 0 or non-finite get variance ``+inf`` and
        the ``NO_DATA`` plane. Only allowed when the file has no ``VARIANCE``
        extension. (A ``VARIANCE`` extension is read as is; :func:`psfmatch.steps.ingest`
        flags its unusable pixels.)
    mask : path-like, optional
        Integer data-quality image, translated with ``mask_bits`` (bit index -> plane,
        e.g. :data:`ZTF_MASK_BITS`) or ``mask_values`` (integer code -> plane, e.g.
        :data:`DECAM_CP_MASK_VALUES`); with neither, any non-zero value is ``BAD``.
        Unmapped bits/codes are ignored with a logged warning. New plane names get the
        next free bits after afw's defaults.
    gain, read_noise : float, optional
        e-/ADU and electrons, used only when no variance of any kind is available
        (defaults: header ``GAIN``/``GAINA`` and ``RDNOISE``/``READNOI``, read noise
        0). Then ``variance = max(image + sky_removed, 0) / gain + (read_noise /
        gain)**2``, where ``sky_removed`` is header ``AVSKY``/``SKYLEVEL`` if the image
        median is below half of it (a sky-subtracted image), else 0; a WARNING is
        logged on ``psfmatch.io``.
    hdu : int or str, optional
        Image HDU of a single-HDU style file.
    layout : {"auto", "mef", "single"}
        ``"auto"`` (default) picks the afw layout when an ``IMAGE`` extension exists.
        ``"mef"`` requires the afw layout: ``IMAGE``, ``MASK`` and ``VARIANCE`` must all
        be present (no gain estimate, no afw-default mask). ``"single"`` never uses the
        afw layout.
    saturation : float or "header", optional
        Flag ``SAT`` where the image is at or above this level (image units);
        ``"header"`` takes the level from the ``SATURATE`` (else ``SATURATN``) card
        when the file is not in the afw layout (whose mask already says what is
        saturated); None (default) flags nothing.

    Returns
    -------
    Exposure
        Integer images (raw frames; ``BZERO``/``BSCALE`` applied, e.g. unsigned 16-bit)
        are float32. Non-finite (NaN, inf) image pixels are flagged ``NO_DATA`` (values kept).
        An estimated variance and a header saturation level are recorded in ``metadata``
        (keys :data:`psfmatch.provenance.NOTE_CARDS`). ``wcs`` is the
        celestial WCS of the image header or None; ``xy0`` comes from ``LTV1/2``
        (``-x0, -y0``) or the afw ``PHYSICAL`` alternate WCS; ``psf`` is an
        :class:`~psfmatch.psf.ImagePsf` when a ``PSF`` HDU exists.

    Raises
    ------
    InputFileError
        Missing, empty, non-FITS, truncated or corrupt file; no image data; non-2-D or
        non-real image; integer data whose ``BZERO``/``BSCALE`` give no finite values;
        missing requested HDU (the message lists the file's HDUs); a ``layout="mef"``
        file without one of IMAGE/MASK/VARIANCE; no gain for a variance estimate.
    ExposureError
        Image, mask and variance shapes disagree (message names the files).
    ConfigError
        More than one of ``variance``/``weight``/``error``, both ``mask_bits`` and
        ``mask_values``, or a map given for a plane the file already has.
    """
    given = {k: v for k, v in (("variance", variance), ("weight", weight), ("error", error))
             if v is not None}
    if len(given) > 1:
        raise ConfigError(f"give at most one of variance/weight/error, got {sorted(given)}")
    if mask_bits is not None and mask_values is not None:
        raise ConfigError("give at most one of mask_bits and mask_values")
    if layout not in ("auto", "mef", "single"):
        raise ConfigError(f"layout must be 'auto', 'mef' or 'single', got {layout!r}")
    if not given and mask is None and layout != "single" and saturation in (None, "header") \
            and (hdu is None or (isinstance(hdu, str) and hdu.upper() == "IMAGE")):
        try:  # a file psfmatch wrote: read without astropy
            return read_afw(path)
        except (LiteUnsupportedError, OSError):
            pass
    return _read_any(path, given=given, mask=mask, mask_bits=mask_bits,
                     mask_values=mask_values, gain=gain, read_noise=read_noise, hdu=hdu,
                     layout=layout, saturation=saturation)


def _read_any(path: str | os.PathLike[str], *, given: dict[str, Any],
              mask: str | os.PathLike[str] | None, mask_bits: Mapping[int, str] | None,
              mask_values: Mapping[int, str] | None, gain: float | None,
              read_noise: float | None, hdu: int | str | None, layout: str,
              saturation: float | str | None) -> Exposure:
    """:func:`read_exposure` of any layout, through astropy."""
    from astropy.io import fits

    from psfmatch.io._convert import (
        add_plane,
        afw_extensions,
        aux_image,
        convert_mask,
        estimate_variance,
        header_metadata,
        header_xy0,
        wcs_from_header,
    )
    from psfmatch.io._fits import check_2d, find_hdu, load_fits, where_in

    path, hdus = load_fits(path, "image file")
    by_name = {h.name: h for h in hdus}
    if layout == "mef":
        absent = [ext for ext in ("IMAGE", "MASK", "VARIANCE") if ext not in by_name]
        if absent:
            names = [h.name or f"#{h.index}" for h in hdus]
            msg = (f"{path}: declared as an afw MEF (layout 'mef') but has no {'/'.join(absent)} "
                   f"extension; its HDUs are {names}")
            raise InputFileError(msg)
    afw = layout != "single" and (
        (hdu is None and "IMAGE" in by_name) or (isinstance(hdu, str) and hdu.upper() == "IMAGE"))
    image_hdu = find_hdu(path, hdus, "IMAGE" if afw else hdu, "image file")
    image = check_2d(path, image_hdu, "image", floating=True)
    where = where_in(path, image_hdu)
    header = image_hdu.header
    primary = hdus[0].header if image_hdu.index != 0 else fits.Header()
    wcs = wcs_from_header(header, where)
    ext_header = header
    if afw and wcs is not None:  # cards wcs.to_header() adds (MJD-OBS, ...) are not metadata
        ext_header = header.copy()
        for key in wcs.to_header(relax=True):
            ext_header.remove(key, ignore_missing=True, remove_all=True)
    metadata = header_metadata(primary, ext_header)

    planes = dict(DEFAULT_MASK_PLANES)
    mask_array = var_array = psf = None
    if afw:
        mask_array, var_array, planes, psf = afw_extensions(path, hdus, image.shape, where)
    if given:
        if var_array is not None:
            msg = f"{path} already has a VARIANCE extension; do not give {sorted(given)}"
            raise ConfigError(msg)
        (kind, aux_path), = given.items()
        aux = aux_image(aux_path, image.shape, f"{kind} file", where).astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            good = np.isfinite(aux) & (aux > 0)
            value = {"variance": aux, "weight": 1.0 / aux, "error": aux * aux}[kind]
        var_array = np.where(good, value, np.inf)
    if mask is not None:
        if mask_array is not None:
            raise ConfigError(f"{path} already has a MASK extension; do not give mask=")
        raw = aux_image(mask, image.shape, "mask file", where)
        mask_array = convert_mask(raw, planes, f"{mask}", mask_bits, mask_values)
    if var_array is None:
        var_array, metadata[NOTE_CARDS["variance"]] = estimate_variance(
            image, metadata, where, gain, read_noise)
    if mask_array is None:
        mask_array = np.zeros(image.shape, dtype=np.int32)
    mask_array = mask_array.astype(np.int32)
    level = saturation_level(metadata, None if afw and saturation == "header" else saturation)
    if level is not None:
        n_sat = flag_saturated(image, mask_array, add_plane(planes, "SAT"), level[0])
        metadata[NOTE_CARDS["saturation"]] = (f"{n_sat} pixels >= {level[0]:.6g} ({level[1]}) "
                                              "flagged SAT")
        logger.info("%s: %s", where, metadata[NOTE_CARDS["saturation"]])
    no_data = ~np.isfinite(image)
    if given:
        no_data |= ~np.isfinite(var_array)
    if np.any(no_data):
        mask_array[no_data] |= np.int32(1 << add_plane(planes, "NO_DATA"))
    try:
        return Exposure(
            image=image, mask=mask_array, variance=var_array, mask_planes=planes,
            wcs=wcs, psf=psf, metadata=metadata, xy0=header_xy0(header),
        )
    except ExposureError as exc:
        raise ExposureError(f"{where}: {exc}") from exc


def same_pixel_grid(path_a: str | os.PathLike[str], path_b: str | os.PathLike[str]
                    ) -> tuple[np.ndarray, dict[str, int]] | None:
    """Whether two exposures lie on one pixel grid exactly, read from their headers.

    Both files must be in psfmatch's afw layout with a WCS, and have identical WCS cards,
    shapes and ``xy0`` (then every pixel maps onto the same pixel, offset 0). Returns
    the first file's MASK and planes when they do (for what a pass-through needs to
    report), else None; None says nothing about grids that differ only in how their
    cards are written. Reads headers and one mask, no image.
    """
    grid_a, grid_b = read_grid(path_a), read_grid(path_b)
    if grid_a is None or grid_a != grid_b or not any(
            card.startswith(("CTYPE1  =", "CTYPE2  =")) for card in grid_a[2]):
        return None
    return read_mask(path_a)


def write_exposure(
    path: str | os.PathLike[str], exposure: Exposure, *, overwrite: bool = True,
    same_as: str | os.PathLike[str] | None = None,
) -> Path:
    """Write ``exposure`` atomically in the LSST afw multi-extension layout.

    PRIMARY (no data, ``exposure.metadata`` as cards), ``IMAGE`` (float32), ``MASK``
    (int32, planes as ``MP_<NAME> = bit``), ``VARIANCE`` (float32); each extension
    carries the WCS and ``LTV1/2 = -x0/-y0`` (plus afw's ``PHYSICAL`` alternate WCS
    ``A``). A PSF with an ``image`` attribute is written to HDU ``PSF``; other PSF
    models are not persisted (a warning is logged). The bytes are those astropy's
    writer produces; a ``.fits.gz`` path is written (gzip-compressed) by astropy.

    Parameters
    ----------
    path : path-like
        Destination (``.fits``; ``.fits.gz`` is gzip-compressed).
    exposure : Exposure
        What to write.
    overwrite : bool, optional
        If False and ``path`` exists, raise :class:`FileExistsError`.
    same_as : path-like, optional
        A file that may already hold exactly these bytes (the input an exposure was read
        from): if it does, it is copied instead of written (the comparison reads it once).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    path = Path(path)
    if not overwrite and path.exists():
        raise FileExistsError(f"{path} exists and overwrite=False")
    psf_image = None
    if exposure.psf is not None:
        if hasattr(exposure.psf, "image"):
            psf_image = np.asarray(exposure.psf.image, dtype=np.float64)
        else:
            logger.warning("PSF %s of %s is not persisted", type(exposure.psf).__name__, path)
    if path.name.endswith(".gz"):
        return _write_astropy(path, exposure, psf_image)
    try:
        hdus = exposure_hdus(
            metadata=exposure.metadata, wcs=exposure.wcs, xy0=exposure.xy0,
            mask_planes=exposure.mask_planes, psf_image=psf_image,
            arrays={"IMAGE": exposure.image, "MASK": exposure.mask,
                    "VARIANCE": exposure.variance})
    except LiteUnsupportedError:
        return _write_astropy(path, exposure, psf_image)
    if same_as is not None and same_file_content(same_as, hdus):
        logger.info("%s: identical to %s; copied", path, same_as)
        return copy_product(path, same_as)
    return write_file(path, hdus)


def _write_astropy(path: Path, exposure: Exposure, psf_image: np.ndarray | None) -> Path:
    """:func:`write_exposure` through astropy (gzip-compressed files)."""
    from astropy.io import fits

    from psfmatch.io._cards import PLAIN_KEY, STRUCTURAL_CARDS
    from psfmatch.io._fits import atomic_output, put_card

    primary = fits.PrimaryHDU()
    for key, value in exposure.metadata.items():
        if not STRUCTURAL_CARDS.match(key):
            put_card(primary.header, key, value)
    wcs_cards = fits.Header.fromstring("".join(wcs_card_images(exposure.wcs)))
    x0, y0 = exposure.xy0
    arrays = {"IMAGE": exposure.image, "MASK": exposure.mask, "VARIANCE": exposure.variance}
    hdus: list[fits.hdu.base.ExtensionHDU | fits.PrimaryHDU] = [primary]
    for name, data in arrays.items():
        header = fits.Header()
        header["INHERIT"] = True
        header["EXTTYPE"] = name
        header.extend(wcs_cards)
        for key, value in (("CRVAL1A", x0), ("CRVAL2A", y0), ("CRPIX1A", 1.0), ("CRPIX2A", 1.0),
                           ("CTYPE1A", "LINEAR"), ("CTYPE2A", "LINEAR"), ("CUNIT1A", "PIXEL"),
                           ("CUNIT2A", "PIXEL"), ("WCSNAMEA", "PHYSICAL"),
                           ("LTV1", -x0), ("LTV2", -y0)):
            header[key] = value
        if name == "MASK":
            for plane, bit in sorted(exposure.mask_planes.items(), key=lambda kv: kv[1]):
                key = f"MP_{plane}"
                header[key if PLAIN_KEY.match(key) else f"HIERARCH {key}"] = bit
        hdus.append(fits.ImageHDU(data=data, header=header, name=name))
    if psf_image is not None:
        hdus.append(fits.ImageHDU(data=psf_image, name="PSF"))
    with atomic_output(path) as tmp:
        fits.HDUList(hdus).writeto(tmp)
    return path


#: How the sheets' ``mask_convention`` column maps to :func:`read_exposure` options.
MASK_CONVENTIONS: dict[str, dict[str, Any]] = {
    "afw": {},
    "ztf": {"mask_bits": ZTF_MASK_BITS},
    "decam_cp": {"mask_values": DECAM_CP_MASK_VALUES},
}


def open_exposure(
    files: Mapping[str, str], options: Mapping[str, Any], *, label: str
) -> Exposure:
    """The exposure of one row of the pairs or exposures sheet, with its PSF model.

    Parameters
    ----------
    files : mapping
        ``image`` and optionally ``variance``, ``weight``, ``error``, ``mask`` and ``psf``
        paths, as the sheet names them.
    options : mapping
        The row's reader options: ``mask_convention`` (``afw``, ``ztf``, ``decam_cp``;
        default ``afw``), ``gain`` (e-/ADU, default: header), ``layout`` (``auto``,
        ``mef``, ``single``; default ``auto``), ``hdu`` (extension name or number of a
        multi-extension file) and ``saturation`` (level; default: the header's
        ``SATURATE``/``SATURATN`` for files not in the afw layout); other keys are
        ignored.
    label : str
        Names the pair and role (or the exposure) in errors.

    Returns
    -------
    Exposure
        As :func:`read_exposure`; ``psf`` is the model of the ``psf`` file when one is
        given (PSFEx ``.psf``, a Legacy Surveys merged PSFEx table or a FITS PSF image,
        :func:`psfmatch.io.psfs.read_psf_model`), else the file's own ``PSF`` HDU, if any.

    Raises
    ------
    PsfMatchError
        An unknown mask convention, or any error of the readers, prefixed with ``label``.
    """
    convention = options.get("mask_convention") or "afw"
    if convention not in MASK_CONVENTIONS:
        msg = (f"{label}: unknown mask convention {convention!r}; "
               f"use one of {sorted(MASK_CONVENTIONS)}")
        raise PsfMatchError(msg)
    try:
        exposure = read_exposure(
            files["image"], variance=files.get("variance"), weight=files.get("weight"),
            error=files.get("error"), mask=files.get("mask"), gain=options.get("gain"),
            layout=options.get("layout") or "auto", hdu=options.get("hdu"),
            saturation=("header" if options.get("saturation") is None
                        else options["saturation"]),
            **MASK_CONVENTIONS[convention],
        )
        if files.get("psf"):
            from psfmatch.io.psfs import read_psf_model

            exposure = exposure.with_(psf=read_psf_model(files["psf"]))
    except PsfMatchError as err:
        raise type(err)(f"{label}: {err}") from err
    return exposure
