"""All file I/O of psfmatch (the only package that opens files).

One module per kind of file; the names below are the package's public interface, so
``from psfmatch import io; io.read_exposure(...)`` reaches every reader and writer.

=====================  =====================================================
module                 files
=====================  =====================================================
:mod:`.exposures`      images in the afw layout or single-HDU + auxiliary maps
:mod:`.tables`         Parquet tables with units and JSON metadata
:mod:`.kernels`        ``kernel.fits`` and the per-candidate array cubes
:mod:`.psfs`           PSF models (PSFEx, FITS images)
:mod:`.sheets`         the pairs and exposures sheets
:mod:`.headers`        header-only reads (image shapes for job sizing)
:mod:`.streams`        exposures read and written by bands of rows
:mod:`.documents`      JSON sidecars, YAML documents, text, figures
=====================  =====================================================

Files psfmatch writes are read and written without astropy (:mod:`._lite`, :mod:`._afw`,
card text in :mod:`._cards`, the WCS kept as cards in :mod:`._wcs`); anything else goes
through astropy (:mod:`._fits`; conversions of external layouts, mask codes, variance
from GAIN, header WCS in :mod:`._convert`). Atomic writes, links and copies of unchanged
products: :mod:`._files`.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Public name -> the submodule that defines it. Submodules are imported on first use
#: (PEP 562), so a step that writes a table does not pay for the sheet validator or
#: the PSFEx reader at start-up.
_WHERE = {
    "DECAM_CP_MASK_VALUES": "_raw",
    "SATURATION_CARDS": "_raw",
    "ZTF_MASK_BITS": "_raw",
    "read_json": "documents",
    "read_yaml": "documents",
    "write_figure": "documents",
    "write_json": "documents",
    "write_text": "documents",
    "MASK_CONVENTIONS": "exposures",
    "open_exposure": "exposures",
    "read_exposure": "exposures",
    "exposure_writer": "streams",
    "open_exposure_rows": "streams",
    "same_pixel_grid": "exposures",
    "copy_product": "_files",
    "link_product": "_files",
    "write_exposure": "exposures",
    "read_image_shape": "headers",
    "read_arrays": "kernels",
    "read_kernel": "kernels",
    "read_stamps": "kernels",
    "write_arrays": "kernels",
    "write_kernel": "kernels",
    "has_psf_hdu": "psfs",
    "read_psf_model": "psfs",
    "write_psf_image": "psfs",
    "read_exposures": "sheets",
    "read_pairs": "sheets",
    "TableData": "tables",
    "read_table": "tables",
    "write_table": "tables",
}

__all__ = [
    "DECAM_CP_MASK_VALUES",
    "MASK_CONVENTIONS",
    "SATURATION_CARDS",
    "ZTF_MASK_BITS",
    "TableData",
    "has_psf_hdu",
    "open_exposure",
    "read_arrays",
    "read_exposure",
    "read_exposures",
    "read_image_shape",
    "read_json",
    "read_kernel",
    "read_yaml",
    "read_pairs",
    "read_stamps",
    "read_psf_model",
    "read_table",
    "exposure_writer",
    "open_exposure_rows",
    "same_pixel_grid",
    "copy_product",
    "link_product",
    "write_arrays",
    "write_exposure",
    "write_figure",
    "write_json",
    "write_kernel",
    "write_psf_image",
    "write_table",
    "write_text",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(f"psfmatch.io.{_WHERE[name]}"), name)
        globals()[name] = value
        return value
    msg = f"module 'psfmatch.io' has no attribute {name!r}"
    raise AttributeError(msg)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
