"""Exposures read and written a band of rows at a time (bounded memory).

A step that works row band by row band (the convolution, the decorrelation) opens its
inputs with :func:`open_exposure_rows` and its outputs with :func:`exposure_writer`:

* :class:`ExposureRows` gives the header information at once (shape, ``xy0``, planes,
  metadata, WCS, PSF) and :meth:`ExposureRows.rows` an :class:`~psfmatch.exposure.Exposure`
  of rows ``start .. stop - 1`` (its ``xy0`` that of its first row), read from the file
  with ``pread`` (psfmatch's own afw files) exactly as :func:`psfmatch.io.read_exposure`
  would give them (non-finite image pixels flagged ``NO_DATA``). Any other file is read
  whole by :func:`~psfmatch.io.read_exposure` and cut into bands.
* :func:`exposure_writer` writes the headers first (the same bytes as
  :func:`psfmatch.io.write_exposure`) and each band at its place; the file appears under
  its name, complete, when the block ends.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from psfmatch.exposure import Exposure
from psfmatch.io._afw import AFW_EXTENSIONS, add_no_data_plane, exposure_hdus, read_afw_header
from psfmatch.io._lite import LiteUnsupportedError, RowReader, band_writer, read_data

__all__ = ["ExposureRows", "ExposureWriter", "exposure_writer", "open_exposure_rows"]


class ExposureRows:
    """An exposure file opened for reading by bands of rows (see the module docstring)."""

    def __init__(self, path: str | os.PathLike[str]):
        from psfmatch.psf import ImagePsf

        self.path = Path(path)
        self._whole: Exposure | None = None
        self._readers: dict[str, RowReader] = {}
        try:
            head = read_afw_header(self.path)
        except (LiteUnsupportedError, OSError):
            from psfmatch.io.exposures import read_exposure

            self._whole = whole = read_exposure(self.path)
            self.shape, self.xy0 = whole.shape, whole.xy0
            self.mask_planes, self.metadata = dict(whole.mask_planes), dict(whole.metadata)
            self.wcs, self.psf = whole.wcs, whole.psf
            return
        self.shape, self.xy0 = head.shape, head.xy0
        self.mask_planes, self.metadata, self.wcs = head.mask_planes, head.metadata, head.wcs
        self.psf = ImagePsf(read_data(self.path, head.hdus[4])) if len(head.hdus) == 5 else None
        self._readers = {h.name: RowReader(self.path, h) for h in head.hdus[1:4]}
        if "NO_DATA" not in self.mask_planes and self._any_non_finite():
            add_no_data_plane(self.mask_planes)

    def _any_non_finite(self) -> bool:
        step = max(1, (8 << 20) // (4 * self.shape[1]))
        return any(not np.isfinite(self._readers["IMAGE"][s : s + step]).all()
                   for s in range(0, self.shape[0], step))

    def rows(self, start: int, stop: int) -> Exposure:
        """Rows ``start .. stop - 1`` as an exposure (no WCS, no PSF; ``xy0`` of row ``start``)."""
        if self._whole is not None:
            w = self._whole
            return Exposure(image=w.image[start:stop], mask=w.mask[start:stop],
                            variance=w.variance[start:stop], mask_planes=w.mask_planes,
                            metadata=w.metadata, xy0=(w.xy0[0], w.xy0[1] + start))
        image, mask, variance = (self._readers[n][start:stop] for n in AFW_EXTENSIONS)
        no_data = ~np.isfinite(image)
        if no_data.any():
            mask[no_data] |= np.int32(1 << self.mask_planes["NO_DATA"])
        return Exposure(image=image, mask=mask, variance=variance, mask_planes=self.mask_planes,
                        metadata=self.metadata, xy0=(self.xy0[0], self.xy0[1] + start))

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()
        self._readers = {}

    def __enter__(self) -> ExposureRows:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_exposure_rows(path: str | os.PathLike[str]) -> ExposureRows:
    """:class:`ExposureRows` of ``path`` (use as a context manager)."""
    return ExposureRows(path)


class ExposureWriter:
    """Bands of an afw-layout file being written (from :func:`exposure_writer`)."""

    def __init__(self, sink: Any, planes: Mapping[str, int], shape: tuple[int, int]):
        self._sink, self.mask_planes, self.shape = sink, dict(planes), shape

    def write(self, start: int, band: Exposure) -> None:
        """Rows ``start .. start + len - 1``: image, mask, variance of ``band``.

        ``band`` must have the planes the file was opened with.
        """
        if band.mask_planes != self.mask_planes:
            msg = f"band planes {band.mask_planes} differ from the file's {self.mask_planes}"
            raise ValueError(msg)
        for unit, array in enumerate((band.image, band.mask, band.variance)):
            self._sink(unit, start, array)


@contextmanager
def exposure_writer(
    path: str | os.PathLike[str], *, shape: tuple[int, int], metadata: Mapping[str, Any],
    wcs: Any, xy0: tuple[int, int], mask_planes: Mapping[str, int],
    psf_image: np.ndarray | None = None,
) -> Iterator[ExposureWriter]:
    """Write an afw-layout exposure band by band (same bytes as ``write_exposure``).

    The header information is given first; :meth:`ExposureWriter.write` then puts each
    band in place. Every row must be written before the block ends. A ``.gz`` path is
    assembled in memory and written by :func:`psfmatch.io.write_exposure`.
    """
    path = Path(path)
    stand_ins = {name: np.broadcast_to(np.zeros((), dtype), tuple(shape))
                 for name, dtype in AFW_EXTENSIONS.items()}
    if path.name.endswith(".gz"):
        arrays = {name: np.empty(tuple(shape), dtype) for name, dtype in AFW_EXTENSIONS.items()}

        def store(unit: int, start: int, rows: np.ndarray) -> None:
            arrays[list(AFW_EXTENSIONS)[unit]][start : start + len(rows)] = rows

        yield ExposureWriter(store, mask_planes, tuple(shape))
        from psfmatch.io.exposures import write_exposure
        from psfmatch.psf import ImagePsf

        write_exposure(path, Exposure(
            image=arrays["IMAGE"], mask=arrays["MASK"], variance=arrays["VARIANCE"],
            mask_planes=mask_planes, wcs=wcs, metadata=metadata, xy0=xy0,
            psf=None if psf_image is None else ImagePsf(psf_image)))
        return
    hdus = exposure_hdus(metadata=metadata, wcs=wcs, xy0=xy0, mask_planes=mask_planes,
                         arrays=stand_ins, psf_image=psf_image)
    if psf_image is not None:  # the PSF is small: written with the headers
        from psfmatch.io._lite import _data_chunks

        hdus[-1].data = b"".join(_data_chunks(np.asarray(psf_image, dtype=np.float64)))
    with band_writer(path, hdus) as writer:
        yield ExposureWriter(writer.write, mask_planes, tuple(shape))
