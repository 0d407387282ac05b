"""All file I/O of psfmatch: FITS exposures, Parquet tables and JSON documents.

Exposures are written in the LSST afw multi-extension layout (PRIMARY with the
metadata, then ``IMAGE``/``MASK``/``VARIANCE`` and optionally ``PSF``) and read either
from that layout or from a single-HDU image plus optional variance / weight / error /
mask files. The WCS of an exposure is the FITS-header WCS of its *array* (astropy
0-based pixel ``(x, y)`` = array ``[y, x]``), not shifted by ``xy0``.

Every writer goes through :func:`_atomic_output`: the data go to a hidden temporary
file in the destination folder, which is then renamed onto the final name.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
import re
import uuid
import warnings
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from psfmatch.errors import ConfigError, ExposureError, InputFileError
from psfmatch.exposure import DEFAULT_MASK_PLANES, MAX_MASK_BIT, Exposure
from psfmatch.psf import ImagePsf

__all__ = [
    "DECAM_CP_MASK_VALUES",
    "ZTF_MASK_BITS",
    "TableData",
    "read_exposure",
    "read_json",
    "read_table",
    "read_arrays",
    "read_kernel",
    "read_psf_image",
    "write_arrays",
    "write_exposure",
    "write_json",
    "write_kernel",
    "write_table",
]

logger = logging.getLogger("psfmatch.io")

#: ZTF ``mskimg`` bit index -> LSST plane (from the ``BITnn`` cards of the mask header).
#: Bits 13-15 are "reserved" and left unmapped. Bits 1 and 11 flag sources.
ZTF_MASK_BITS: dict[int, str] = {
    0: "STREAK",  # aircraft/satellite track
    1: "DETECTED",  # contains SExtractor detection
    2: "BAD",  # low responsivity
    3: "BAD",  # high responsivity
    4: "SUSPECT",  # noisy
    5: "SUSPECT",  # ghost from bright source
    6: "SUSPECT",  # possible ghost from charge spillage
    7: "CR",  # pixel spike (possible radiation hit)
    8: "SAT",  # saturated
    9: "BAD",  # dead (unresponsive)
    10: "NO_DATA",  # NaN
    11: "DETECTED",  # contains PSF-extracted source position
    12: "SUSPECT",  # halo from bright source
}

#: DECam Community Pipeline ``ood`` integer code -> LSST plane (0 = good). Bleed
#: trails (4) go to ``SAT``, as afw/ISR flags them, so every consumer that masks
#: saturation also masks bleeds.
DECAM_CP_MASK_VALUES: dict[int, str] = {
    1: "BAD",
    2: "NO_DATA",
    3: "SAT",
    4: "SAT",  # bleed trail
    5: "CR",
    6: "SUSPECT",  # low weight
    7: "SUSPECT",  # transient (differs from other exposures)
    8: "STREAK",
}

_STRUCTURAL = re.compile(
    r"^(SIMPLE|BITPIX|NAXIS\d*|EXTEND|PCOUNT|GCOUNT|XTENSION|EXTNAME|EXTVER|EXTLEVEL|"
    r"BSCALE|BZERO|BLANK|CHECKSUM|DATASUM|INHERIT|EXTTYPE|"
    r"LTV\d|LTM\d_\d|COMMENT|HISTORY|MP_.*)$"
)
_WCS_CARDS = re.compile(
    r"^(WCSAXES|WCSNAME|CTYPE\d|CRPIX\d|CRVAL\d|CDELT\d|CUNIT\d|CROTA\d|CD\d_\d|PC\d_\d|"
    r"PV\d_\d+|PS\d_\d+|LONPOLE|LATPOLE|RADESYS|RADECSYS|EQUINOX|EPOCH|MJDREF|"
    r"(A|B|AP|BP)_(ORDER|DMAX|\d+_\d+)|CPDIS\d|CQDIS\d|DP\d.*|DQ\d.*|D2IM.*)[A-Z]?$"
)
_PLAIN_KEY = re.compile(r"^[A-Z0-9_-]{1,8}$")
_AFW_EXTS = ("IMAGE", "MASK", "VARIANCE")


class _Hdu(NamedTuple):
    index: int
    name: str
    header: fits.Header
    data: np.ndarray | None


class TableData(NamedTuple):
    """What :func:`read_table` returns (unpacks as ``columns, units, metadata``)."""

    columns: dict[str, np.ndarray]
    units: dict[str, str]
    metadata: dict[str, Any]


# ---------------------------------------------------------------------- atomic writes
@contextmanager
def _atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    The temporary name ends with the final name, so suffix-driven behaviour (``.gz``)
    is unchanged. On any exception the temporary file is removed.
    """
    final = Path(path)
    tmp = final.with_name(f".tmp-{uuid.uuid4().hex[:12]}-{final.name}")
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------------- FITS helpers
def _where(path: Path, hdu: _Hdu) -> str:
    return f"{path} [HDU {hdu.index} {hdu.name!r}]"


def _load_fits(path: str | os.PathLike[str], what: str = "FITS file") -> tuple[Path, list[_Hdu]]:
    """Read every header and image array of ``path`` into memory, or raise InputFileError."""
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{what} {path} does not exist")
    if not path.is_file():
        raise InputFileError(f"{what} {path} is not a regular file")
    if path.stat().st_size == 0:
        raise InputFileError(f"{what} {path} is empty (0 bytes)")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputFileError(f"{what} {path} cannot be read ({exc})") from exc
    if raw[:2] == b"\x1f\x8b":  # astropy silently stops at a truncated gzip stream
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise InputFileError(f"{what} {path} is a corrupt gzip file ({exc})") from exc
    hdus: list[_Hdu] = []
    last = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        failure: Exception | None = None
        try:
            with fits.open(io.BytesIO(raw), memmap=False, lazy_load_hdus=False) as hdul:
                for index, hdu in enumerate(hdul):
                    data = None
                    if isinstance(hdu, fits.PrimaryHDU | fits.ImageHDU | fits.CompImageHDU):
                        # one copy that also converts FITS big-endian to native order
                        data = (
                            None
                            if hdu.data is None
                            else hdu.data.astype(hdu.data.dtype.newbyteorder("="))
                        )
                    elif isinstance(hdu, fits.BinTableHDU) and hdu.data is not None:
                        data = np.array(hdu.data)  # structured array
                    hdus.append(_Hdu(index, hdu.name, hdu.header.copy(), data))
                last = hdul.fileinfo(len(hdul) - 1) if len(hdul) else None
        except Exception as exc:  # astropy, numpy and zlib raise many types
            failure = exc
    notes = [str(w.message) for w in caught]
    broken = [n for n in notes if "truncated" in n or "extra bytes after the last HDU" in n]
    if failure is None and last is not None and last["datLoc"] + last["datSpan"] > len(raw):
        broken.append(f"last HDU ends at byte {last['datLoc'] + last['datSpan']} > {len(raw)}")
    if broken:
        note = broken[0].replace("\n", " ")
        raise InputFileError(f"{what} {path} is truncated or corrupt: {note}") from failure
    if failure is not None:
        msg = f"{what} {path} cannot be read as FITS ({type(failure).__name__}: {failure})"
        raise InputFileError(msg) from failure
    for note in notes:
        logger.info("%s: %s", path, note)
    if not hdus:
        raise InputFileError(f"{what} {path} contains no HDU")
    return path, hdus


def _find_hdu(path: Path, hdus: list[_Hdu], hdu: int | str | None, what: str) -> _Hdu:
    """The HDU named/numbered ``hdu``, else the first one holding image data."""
    if hdu is not None:
        for item in hdus:
            if item.index == hdu or (isinstance(hdu, str) and item.name == hdu.upper()):
                return item
        names = [f"{h.index}:{h.name}" for h in hdus]
        raise InputFileError(f"{what} {path} has no HDU {hdu!r} (HDUs: {names})")
    for item in hdus:
        if item.data is not None and item.data.size > 0:
            return item
    raise InputFileError(f"{what} {path} has no HDU with image data (expected a 2-D image)")


def _check_2d(path: Path, hdu: _Hdu, what: str, *, floating: bool) -> np.ndarray:
    data = hdu.data
    if data is None:
        raise InputFileError(f"{what} {_where(path, hdu)} has no data (expected a 2-D image)")
    if data.ndim != 2:
        msg = f"{what} {_where(path, hdu)} is {data.ndim}-D with shape {data.shape}; expected 2-D"
        raise InputFileError(msg)
    if floating and not np.issubdtype(data.dtype, np.floating):
        msg = (
            f"{what} {_where(path, hdu)} has integer dtype {data.dtype}; science images "
            "must be floating point (BITPIX -32/-64, or scaled with BSCALE)"
        )
        raise InputFileError(msg)
    if not np.issubdtype(data.dtype, np.number) or np.issubdtype(data.dtype, np.complexfloating):
        raise InputFileError(f"{what} {_where(path, hdu)} has non-real dtype {data.dtype}")
    return data


def _aux_image(path: Any, shape: tuple[int, ...], what: str, image_where: str) -> np.ndarray:
    """First 2-D image of an auxiliary file (variance, weight, error, mask)."""
    apath, hdus = _load_fits(path, what)
    hdu = _find_hdu(apath, hdus, None, what)
    data = _check_2d(apath, hdu, what, floating=False)
    if data.shape != shape:
        msg = f"{what} {_where(apath, hdu)} has shape {data.shape}; image {image_where} has {shape}"
        raise ExposureError(msg)
    return data


def _metadata(*headers: fits.Header) -> dict[str, Any]:
    """Non-structural, non-WCS cards as name -> str/int/float/bool (later headers win)."""
    meta: dict[str, Any] = {}
    for header in headers:
        for key, value in header.items():
            if not key or _STRUCTURAL.match(key) or _WCS_CARDS.match(key):
                continue
            if isinstance(value, bool | int | float | str):
                meta[key] = value
    return meta


def _wcs_from_header(header: fits.Header, where: str) -> WCS | None:
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


def _xy0(header: fits.Header) -> tuple[int, int]:
    if "LTV1" in header or "LTV2" in header:
        return (int(round(-header.get("LTV1", 0.0))), int(round(-header.get("LTV2", 0.0))))
    if str(header.get("WCSNAMEA", "")).strip().upper() == "PHYSICAL":
        return (int(round(header.get("CRVAL1A", 0.0))), int(round(header.get("CRVAL2A", 0.0))))
    return (0, 0)


def _add_plane(planes: dict[str, int], name: str) -> int:
    if name not in planes:
        free = sorted(set(range(MAX_MASK_BIT + 1)) - set(planes.values()))
        if not free:
            raise ExposureError(f"no free mask bit left for plane {name!r}")
        planes[name] = free[0]
    return planes[name]


def _convert_mask(
    raw: np.ndarray,
    planes: dict[str, int],
    where: str,
    mask_bits: Mapping[int, str] | None,
    mask_values: Mapping[int, str] | None,
) -> np.ndarray:
    """Turn an external data-quality image into LSST-style bit planes."""
    raw = np.asarray(raw)
    if np.issubdtype(raw.dtype, np.floating):
        if not np.all(np.isfinite(raw) & (raw == np.round(raw))):
            raise InputFileError(f"mask {where} has non-integer values")
    raw = raw.astype(np.int64)
    mask = np.zeros(raw.shape, dtype=np.int32)
    if mask_bits is not None:
        mapped = 0
        for bit, name in mask_bits.items():
            mapped |= 1 << int(bit)
            hit = (raw >> int(bit)) & 1 != 0
            mask[hit] |= np.int32(1 << _add_plane(planes, name))
        unmapped = raw & ~mapped
    elif mask_values is not None:
        unmapped = raw.copy()
        for code, name in mask_values.items():
            hit = raw == int(code)
            mask[hit] |= np.int32(1 << _add_plane(planes, name))
            unmapped[hit] = 0
    else:
        mask[raw != 0] |= np.int32(1 << _add_plane(planes, "BAD"))
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


def _estimate_variance(
    image: np.ndarray, header: Mapping[str, Any], where: str, gain: float | None,
    read_noise: float | None,
) -> np.ndarray:
    """Poisson + read-noise variance, logged as an estimate (see :func:`read_exposure`)."""
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
    logger.warning(
        "variance of %s estimated from gain %.6g e-/ADU (%s), read noise %.6g e- (%s); %s",
        where, gain, source, read_noise, rn_source, sky_note,
    )
    return variance


def _afw_extensions(
    path: Path, hdus: list[_Hdu], shape: tuple[int, ...], where: str
) -> tuple[np.ndarray | None, np.ndarray | None, dict[str, int], ImagePsf | None]:
    """MASK (with its ``MP_*`` planes), VARIANCE and PSF of an afw-layout file."""
    by_name = {h.name: h for h in hdus}
    arrays: dict[str, np.ndarray | None] = {"MASK": None, "VARIANCE": None}
    planes = dict(DEFAULT_MASK_PLANES)
    for ext in arrays:
        if ext not in by_name:
            continue
        arr = _check_2d(path, by_name[ext], ext, floating=ext == "VARIANCE")
        ext_where = _where(path, by_name[ext])
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
            raise InputFileError(f"PSF {_where(path, by_name['PSF'])}: {exc}") from exc
    return arrays["MASK"], arrays["VARIANCE"], planes, psf


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
        whose weight/error is <= 0 or non-finite (or whose variance is < 0 or
        non-finite) get variance ``+inf`` and the ``NO_DATA`` plane. Only allowed when
        the file has no ``VARIANCE`` extension.
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

    Returns
    -------
    Exposure
        Non-finite (NaN, inf) image pixels are flagged ``NO_DATA`` (values kept). ``wcs`` is the
        celestial WCS of the image header or None; ``xy0`` comes from ``LTV1/2``
        (``-x0, -y0``) or the afw ``PHYSICAL`` alternate WCS; ``psf`` is an
        :class:`~psfmatch.psf.ImagePsf` when a ``PSF`` HDU exists.

    Raises
    ------
    InputFileError
        Missing, empty, non-FITS, truncated or corrupt file; no image data; non-2-D or
        integer image; missing requested HDU; no gain for a variance estimate.
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
    path, hdus = _load_fits(path, "image file")
    by_name = {h.name: h for h in hdus}
    afw = (hdu is None and "IMAGE" in by_name) or (isinstance(hdu, str) and hdu.upper() == "IMAGE")
    image_hdu = _find_hdu(path, hdus, "IMAGE" if afw else hdu, "image file")
    image = _check_2d(path, image_hdu, "image", floating=True)
    where = _where(path, image_hdu)
    header = image_hdu.header
    primary = hdus[0].header if image_hdu.index != 0 else fits.Header()
    wcs = _wcs_from_header(header, where)
    ext_header = header
    if afw and wcs is not None:  # cards wcs.to_header() adds (MJD-OBS, ...) are not metadata
        ext_header = header.copy()
        for key in wcs.to_header(relax=True):
            ext_header.remove(key, ignore_missing=True, remove_all=True)
    metadata = _metadata(primary, ext_header)

    planes = dict(DEFAULT_MASK_PLANES)
    mask_array = var_array = psf = None
    if afw:
        mask_array, var_array, planes, psf = _afw_extensions(path, hdus, image.shape, where)
    if given:
        if var_array is not None:
            msg = f"{path} already has a VARIANCE extension; do not give {sorted(given)}"
            raise ConfigError(msg)
        (kind, aux_path), = given.items()
        aux = _aux_image(aux_path, image.shape, f"{kind} file", where).astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            good = np.isfinite(aux) & ((aux >= 0) if kind == "variance" else (aux > 0))
            value = {"variance": aux, "weight": 1.0 / aux, "error": aux * aux}[kind]
        var_array = np.where(good, value, np.inf)
    if mask is not None:
        if mask_array is not None:
            raise ConfigError(f"{path} already has a MASK extension; do not give mask=")
        raw = _aux_image(mask, image.shape, "mask file", where)
        mask_array = _convert_mask(raw, planes, f"{mask}", mask_bits, mask_values)
    if var_array is None:
        var_array = _estimate_variance(image, metadata, where, gain, read_noise)
    if mask_array is None:
        mask_array = np.zeros(image.shape, dtype=np.int32)
    mask_array = mask_array.astype(np.int32)
    no_data = ~np.isfinite(image)
    if given:
        no_data |= ~np.isfinite(var_array)
    if np.any(no_data):
        mask_array[no_data] |= np.int32(1 << _add_plane(planes, "NO_DATA"))
    try:
        return Exposure(
            image=image, mask=mask_array, variance=var_array, mask_planes=planes,
            wcs=wcs, psf=psf, metadata=metadata, xy0=_xy0(header),
        )
    except ExposureError as exc:
        raise ExposureError(f"{where}: {exc}") from exc


def _put_card(header: fits.Header, key: str, value: Any) -> None:
    if isinstance(value, np.generic):
        value = value.item()
    if not isinstance(value, bool | int | float | str):
        raise ExposureError(f"metadata card {key!r} has unsupported type {type(value).__name__}")
    if isinstance(value, float) and not np.isfinite(value):
        raise ExposureError(f"metadata card {key!r} = {value!r} cannot be stored in FITS")
    card_key = key if _PLAIN_KEY.match(key) else f"HIERARCH {key}"
    try:
        header[card_key] = value
    except ValueError as exc:
        raise ExposureError(f"metadata card {key!r} = {value!r}: {exc}") from exc


def write_exposure(
    path: str | os.PathLike[str], exposure: Exposure, *, overwrite: bool = True
) -> Path:
    """Write ``exposure`` atomically in the LSST afw multi-extension layout.

    PRIMARY (no data, ``exposure.metadata`` as cards), ``IMAGE`` (float32), ``MASK``
    (int32, planes as ``MP_<NAME> = bit``), ``VARIANCE`` (float32); each extension
    carries the WCS and ``LTV1/2 = -x0/-y0`` (plus afw's ``PHYSICAL`` alternate WCS
    ``A``). A PSF with an ``image`` attribute is written to HDU ``PSF``; other PSF
    models are not persisted (a warning is logged).

    Parameters
    ----------
    path : path-like
        Destination (``.fits``; ``.fits.gz`` is gzip-compressed).
    exposure : Exposure
        What to write.
    overwrite : bool, optional
        If False and ``path`` exists, raise :class:`FileExistsError`.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    path = Path(path)
    if not overwrite and path.exists():
        raise FileExistsError(f"{path} exists and overwrite=False")
    primary = fits.PrimaryHDU()
    for key, value in exposure.metadata.items():
        if not _STRUCTURAL.match(key):
            _put_card(primary.header, key, value)
    wcs_cards = exposure.wcs.to_header(relax=True) if exposure.wcs is not None else fits.Header()
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
                header[key if _PLAIN_KEY.match(key) else f"HIERARCH {key}"] = bit
        hdus.append(fits.ImageHDU(data=data, header=header, name=name))
    if exposure.psf is not None:
        if hasattr(exposure.psf, "image"):
            psf_image = np.asarray(exposure.psf.image, dtype=np.float64)
            hdus.append(fits.ImageHDU(data=psf_image, name="PSF"))
        else:
            logger.warning("PSF %s of %s is not persisted", type(exposure.psf).__name__, path)
    with _atomic_output(path) as tmp:
        fits.HDUList(hdus).writeto(tmp)
    return path


# ---------------------------------------------------------------------- tables
def write_table(
    path: str | os.PathLike[str],
    columns: Mapping[str, np.ndarray] | Any,
    *,
    units: Mapping[str, str] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write columns to Parquet atomically, with per-column units and JSON metadata.

    Parameters
    ----------
    path : path-like
        Destination ``.parquet`` file.
    columns : mapping of str to 1-D array, or pyarrow.Table
        Equal-length columns.
    units : mapping of str to str, optional
        Column name -> unit string, stored as field metadata ``unit``.
    metadata : mapping, optional
        JSON-serialisable (numpy allowed) document, e.g. the producing step and its
        config, stored under schema metadata key ``psfmatch``.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if isinstance(columns, pa.Table):
        table = columns
    else:
        arrays = {str(k): np.asarray(v) for k, v in columns.items()}
        lengths = {k: v.shape for k, v in arrays.items()}
        if any(len(s) != 1 for s in lengths.values()) or len({s[0] for s in lengths.values()}) > 1:
            msg = f"table {path}: columns must be 1-D and of equal length, got {lengths}"
            raise ValueError(msg)
        table = pa.table(arrays)
    units = dict(units or {})
    unknown = sorted(set(units) - set(table.column_names))
    if unknown:
        raise ValueError(f"table {path}: units given for unknown columns {unknown}")
    fields = [
        field.with_metadata({**(field.metadata or {}), b"unit": str(units[field.name])})
        if field.name in units else field
        for field in table.schema
    ]
    schema_meta = dict(table.schema.metadata or {})
    schema_meta[b"psfmatch"] = json.dumps(_jsonable(dict(metadata or {})), sort_keys=True)
    table = table.cast(pa.schema(fields, metadata=schema_meta))
    with _atomic_output(path) as tmp:
        pq.write_table(table, tmp)
    return Path(path)


def read_table(path: str | os.PathLike[str]) -> TableData:
    """Read a Parquet table written by :func:`write_table`.

    Returns
    -------
    TableData
        ``(columns, units, metadata)``: name -> numpy array, name -> unit (only columns
        that have one), and the decoded ``psfmatch`` metadata (``{}`` if absent).

    Raises
    ------
    InputFileError
        Missing or unreadable file.
    """
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        table = pq.read_table(path)
    except Exception as exc:
        raise InputFileError(f"table {path} cannot be read as Parquet ({exc})") from exc
    columns = {name: table.column(name).to_numpy() for name in table.column_names}
    units = {
        f.name: f.metadata[b"unit"].decode()
        for f in table.schema if f.metadata and b"unit" in f.metadata
    }
    raw = (table.schema.metadata or {}).get(b"psfmatch")
    return TableData(columns, units, json.loads(raw) if raw else {})


# ---------------------------------------------------------------------- JSON
def _jsonable(obj: Any) -> Any:
    """Recursively turn numpy scalars/arrays, paths, tuples and sets into JSON types."""
    if isinstance(obj, Mapping):
        keys = [k.item() if isinstance(k, np.generic) else k for k in obj]
        return {k: _jsonable(v) for k, v in zip(keys, obj.values(), strict=True)}
    if isinstance(obj, list | tuple | set | frozenset):
        items = sorted(obj) if isinstance(obj, set | frozenset) else obj
        return [_jsonable(v) for v in items]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as JSON atomically (sorted keys, indent 2, trailing newline).

    numpy scalars/arrays, paths, tuples and sets are converted. NaN/inf are written
    as ``NaN``/``Infinity`` (Python's JSON dialect).
    """
    text = json.dumps(_jsonable(obj), sort_keys=True, indent=2) + "\n"
    with _atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON document; :class:`InputFileError` naming the file if it is missing or invalid."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputFileError(f"JSON file {path} cannot be read ({exc})") from exc


# ---------------------------------------------------------------------- kernels
def _metadata_hdu(metadata: Mapping[str, Any]) -> fits.BinTableHDU:
    """One-row ``METADATA`` table holding ``metadata`` as JSON text."""
    text = json.dumps(_jsonable(dict(metadata)), sort_keys=True)
    column = fits.Column(name="json", format=f"{max(len(text), 1)}A", array=np.array([text]))
    return fits.BinTableHDU.from_columns([column], name="METADATA")


def _read_metadata_hdu(hdu: _Hdu) -> dict[str, Any]:
    """Inverse of :func:`_metadata_hdu`."""
    if hdu.data is None:
        return {}
    text = hdu.data["json"][0]
    text = text.decode() if isinstance(text, bytes) else str(text)
    return json.loads(text) if text.strip() else {}


def write_kernel(path: str | os.PathLike[str], kernel: Any) -> Path:
    """Write a :class:`~psfmatch.kernel.SpatialKernel` as ``kernel.fits`` (atomic).

    Layout: PRIMARY (cards ``KSIZE``, ``NBASIS``, ``KSUM`` = kernel sum at the bbox
    centre, the spatial model ``SPMODEL``/``SPORDER``, the bbox ``BBOX_X0..BBOX_Y1``,
    the background model ``BGMODEL``/``BGORDER`` (``-1`` = none)); ``BASIS`` (float64
    cube ``n_basis × k × k``); ``COEFFS`` (``n_basis × n_terms``); ``BACKGROUND``
    (``n_bg_terms``); ``METADATA`` (one-row table, the provenance as JSON text: config,
    basis description, fit health).
    """
    primary = fits.PrimaryHDU()
    header = primary.header
    header["KSIZE"] = (kernel.kernel_size, "kernel width = height (px)")
    header["NBASIS"] = (int(kernel.basis.shape[0]), "number of basis kernels")
    header["KSUM"] = (kernel.kernel_sum, "kernel sum at the bbox centre")
    func = kernel.kernel_function
    header["SPMODEL"] = (func.model_type, "spatial function family")
    header["SPORDER"] = (func.order, "spatial order of the kernel coefficients")
    for key, value in zip(("BBOX_X0", "BBOX_Y0", "BBOX_X1", "BBOX_Y1"), func.bbox, strict=True):
        header[key] = (value, "inclusive parent bbox of the spatial model")
    bg = kernel.background_function
    header["BGMODEL"] = (bg.model_type if bg is not None else "none", "background family")
    header["BGORDER"] = (bg.order if bg is not None else -1, "background order (-1: none)")
    hdus = [
        primary,
        fits.ImageHDU(np.asarray(kernel.basis, dtype=np.float64), name="BASIS"),
        fits.ImageHDU(np.asarray(kernel.coefficients, dtype=np.float64), name="COEFFS"),
        fits.ImageHDU(np.asarray(kernel.background_coefficients, dtype=np.float64), name="BACKGROUND"),
        _metadata_hdu(kernel.metadata),
    ]
    with _atomic_output(path) as tmp:
        fits.HDUList(hdus).writeto(tmp)
    return Path(path)


def read_kernel(path: str | os.PathLike[str]) -> Any:
    """Read ``kernel.fits`` written by :func:`write_kernel` into a ``SpatialKernel``."""
    from psfmatch.kernel import SpatialKernel
    from psfmatch.spatial import SpatialFunction

    path, hdus = _load_fits(path, "kernel file")
    by_name = {h.name: h for h in hdus}
    missing = [n for n in ("BASIS", "COEFFS", "BACKGROUND", "METADATA") if n not in by_name]
    if missing:
        raise InputFileError(f"kernel file {path} lacks HDU(s) {missing}")
    header = hdus[0].header
    try:
        bbox = tuple(int(header[k]) for k in ("BBOX_X0", "BBOX_Y0", "BBOX_X1", "BBOX_Y1"))
        func = SpatialFunction(int(header["SPORDER"]), str(header["SPMODEL"]), bbox)
        bg_func = (
            SpatialFunction(int(header["BGORDER"]), str(header["BGMODEL"]), bbox)
            if int(header["BGORDER"]) >= 0
            else None
        )
    except KeyError as exc:
        raise InputFileError(f"kernel file {path} PRIMARY lacks card {exc}") from None
    background = by_name["BACKGROUND"].data
    return SpatialKernel(
        basis=np.asarray(by_name["BASIS"].data, dtype=np.float64),
        coefficients=np.asarray(by_name["COEFFS"].data, dtype=np.float64),
        kernel_function=func,
        background_coefficients=(
            np.zeros(0) if background is None else np.asarray(background, dtype=np.float64)
        ),
        background_function=bg_func,
        metadata=_read_metadata_hdu(by_name["METADATA"]),
    )


def read_psf_image(path: str | os.PathLike[str]) -> ImagePsf:
    """Read a constant PSF model from a FITS image (HDU ``PSF`` if present, else the first 2-D image)."""
    path, hdus = _load_fits(path, "PSF file")
    named = [h for h in hdus if h.name == "PSF" and h.data is not None]
    candidates = named or [h for h in hdus if h.data is not None and h.data.ndim == 2]
    if not candidates:
        raise InputFileError(f"PSF file {path} has no 2-D image HDU")
    hdu = candidates[0]
    try:
        return ImagePsf(hdu.data)
    except ExposureError as exc:
        raise InputFileError(f"PSF {_where(path, hdu)}: {exc}") from exc


def write_arrays(
    path: str | os.PathLike[str],
    arrays: Mapping[str, np.ndarray],
    *,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write named numeric arrays as image HDUs of one FITS file (atomic).

    Each array becomes an ImageHDU with ``EXTNAME`` = its key; ``metadata`` is stored
    as JSON text in a one-row ``METADATA`` table. Used for per-candidate stamps and
    kernels, which travel between steps as cubes.
    """
    hdus: list[Any] = [fits.PrimaryHDU()]
    for name, data in arrays.items():
        hdus.append(fits.ImageHDU(np.ascontiguousarray(data), name=name.upper()))
    hdus.append(_metadata_hdu(metadata or {}))
    with _atomic_output(path) as tmp:
        fits.HDUList(hdus).writeto(tmp)
    return Path(path)


def read_arrays(
    path: str | os.PathLike[str], names: tuple[str, ...] | None = None
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read the arrays (and metadata) written by :func:`write_arrays`.

    ``names`` lists the HDUs that must be present (:class:`InputFileError` otherwise).
    Zero-length arrays come back with shape ``(0,)``.
    """
    path, hdus = _load_fits(path, "array file")
    arrays = {
        h.name: (h.data if h.data is not None else np.zeros(0))
        for h in hdus[1:]
        if h.name != "METADATA"
    }
    missing = [n for n in (names or ()) if n.upper() not in arrays]
    if missing:
        raise InputFileError(f"array file {path} lacks HDU(s) {missing}")
    meta = next((_read_metadata_hdu(h) for h in hdus if h.name == "METADATA"), {})
    return arrays, meta
