"""The spatially varying convolution of an exposure, one band of rows at a time.

:func:`psfmatch.subtract.convolve_exposure` on a whole image holds the image, its
transform, one inverse transform per spatial term and the float64 sum at full size: at
4096² about 1.5 GB. Here the same convolution is done in bands of ``band`` rows, each
read with the ``k // 2`` rows of kernel halo above and below (overlap-save: the band's
transform is computed once and serves every spatial term), so memory is bounded by the
band, not by the image. Per pixel the operations are those of the whole-image function:

* image: :math:`\\sum_t f_t(x, y)\\,(T \\star K'_t)(x, y)` (float32 transforms, float32
  terms scaled by the float64 factors and summed in float64, as there); ``NO_DATA`` or
  non-finite inputs count as 0 and poison their footprint (NaN, ``NO_DATA``). The
  transform size follows the band, so the values differ from the whole-image ones by
  the float32 rounding of the transforms (about :math:`10^{-7}` of the image scale).
* variance :math:`\\sum K^2 V` with ``K`` at the centre of each ``variance_block`` block:
  the same tiles and transforms as the whole-image function (``band`` is a multiple of
  ``variance_block`` and bands start on block boundaries), hence identical values.
* mask: every plane OR-dilated over the ``k × k`` footprint (identical).
* the ``k // 2`` border keeps the input values and gets ``EDGE`` (identical).

No file I/O happens here: the caller reads the rows (:meth:`BandConvolver.rows_needed`)
and writes the bands.
"""

from __future__ import annotations

import numpy as np

from psfmatch.cpus import available_cpus
from psfmatch.exposure import Exposure
from psfmatch.kernel import SpatialKernel
from psfmatch.subtract import or_filter

__all__ = ["BandConvolver", "band_ranges"]


def band_ranges(n_rows: int, band: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` covering ``0 .. n_rows - 1`` in bands of ``band`` rows."""
    return [(start, min(start + band, n_rows)) for start in range(0, n_rows, band)]


class BandConvolver:
    """Convolve the bands of one image (``shape``, parent origin ``xy0``) with ``kernel``.

    Parameters
    ----------
    kernel : SpatialKernel
        The spatially varying kernel (parent coordinates).
    shape, xy0 : tuple of int
        The whole image's ``(ny, nx)`` and parent origin.
    band : int
        Rows per band; a multiple of ``variance_block``.
    variance_block : int
        Block size of the variance convolution (as
        :func:`psfmatch.subtract.convolve_exposure`).
    """

    def __init__(self, kernel: SpatialKernel, shape: tuple[int, int], xy0: tuple[int, int],
                 *, band: int = 512, variance_block: int = 512):
        if band <= 0 or band % variance_block:
            msg = f"band ({band}) must be a positive multiple of variance_block ({variance_block})"
            raise ValueError(msg)
        self.kernel, self.shape, self.xy0 = kernel, tuple(shape), tuple(xy0)
        self.band, self.block = int(band), int(variance_block)
        self.half = kernel.kernel_size // 2
        self._terms = kernel.refactored()
        self._fts: dict[tuple[int, int], list[np.ndarray | None]] = {}
        ny, nx = self.shape
        # the EDGE border as the whole-image slicing defines it (k = 1: everything)
        self._edge_rows = np.zeros(ny, dtype=bool)
        self._edge_cols = np.zeros(nx, dtype=bool)
        for flags in (self._edge_rows, self._edge_cols):
            flags[: self.half] = True
            flags[-self.half :] = True

    def bands(self) -> list[tuple[int, int]]:
        """The output bands ``(start, stop)``."""
        return band_ranges(self.shape[0], self.band)

    def rows_needed(self, start: int, stop: int) -> tuple[int, int]:
        """Input rows ``(lo, hi)`` the band ``start .. stop - 1`` needs (its halo, clipped)."""
        return max(0, start - self.half), min(self.shape[0], stop + self.half)

    def _kernel_fts(self, fshape: tuple[int, int]) -> list[np.ndarray | None]:
        from scipy import fft

        if fshape not in self._fts:
            self._fts.clear()  # one band height at a time (the last band may differ)
            self._fts[fshape] = [
                fft.rfft2(t[::-1, ::-1].astype(np.float32), fshape, workers=available_cpus())
                if np.any(t) else None for t in self._terms]
        return self._fts[fshape]

    def convolve(self, source: Exposure, start: int, stop: int) -> Exposure:
        """The convolved rows ``start .. stop - 1`` from ``source`` = rows ``rows_needed``.

        ``source`` is the input's band (its ``xy0`` the parent origin of its first row);
        the result has its planes plus ``EDGE`` and ``NO_DATA``, metadata, WCS and PSF,
        and the ``xy0`` of row ``start``. image, variance, mask as the module says.
        """
        from scipy import fft

        k, half = self.kernel.kernel_size, self.half
        ny, nx = self.shape
        lo, hi = self.rows_needed(start, stop)
        if source.shape != (hi - lo, nx):
            raise ValueError(f"source band has shape {source.shape}; expected {(hi - lo, nx)}")
        n, rows_in = stop - start, stop - start + 2 * half
        top = lo - (start - half)  # halo rows above the image (zeros)
        inside = slice(top, top + hi - lo)
        no_data = source.plane_bitmask(["NO_DATA"])
        bad = ~np.isfinite(source.image) | ((source.mask & no_data) != 0)

        workers = available_cpus()
        buffer = np.zeros((rows_in, nx), dtype=np.float32)
        buffer[inside] = np.where(bad, 0.0, source.image)
        fshape = (fft.next_fast_len(rows_in, True), fft.next_fast_len(nx + k - 1, True))
        image_ft = fft.rfft2(buffer, fshape, workers=workers)
        del buffer
        x0, y0 = self.xy0
        xs = np.arange(nx, dtype=np.float64) + x0
        ys = np.arange(start, stop, dtype=np.float64) + y0
        factors = self.kernel.kernel_function.separable_terms(xs[None, :], ys[:, None])
        out = np.zeros((n, nx), dtype=np.float64)
        product = np.empty_like(image_ft)
        for (fx, fy), kernel_ft in zip(factors, self._kernel_fts(fshape), strict=True):
            if kernel_ft is None:
                continue
            np.multiply(image_ft, kernel_ft, out=product)
            corr = fft.irfft2(product, fshape, workers=workers)[2 * half : 2 * half + n,
                                                                half : half + nx]
            corr *= fy
            corr *= fx
            out += corr
        del image_ft, product
        out_image = out.astype(np.float32)
        del out

        variance = np.zeros((rows_in, nx + 2 * half), dtype=np.float32)
        variance[inside, half : half + nx] = np.where(
            bad | ~np.isfinite(source.variance), 0.0, source.variance)
        out_var = self._variance(variance, start, stop)
        del variance

        exp = source.with_planes(["EDGE", "NO_DATA"])
        padded = np.zeros((rows_in, nx), dtype=source.mask.dtype)
        padded[inside] = exp.mask
        mask = or_filter(padded, k)[half : half + n]
        padded = np.zeros((rows_in, nx), dtype=np.uint8)
        padded[inside] = bad
        poisoned = or_filter(padded, k)[half : half + n].astype(bool)
        del padded
        out_image[poisoned] = np.nan
        out_var[poisoned] = np.inf
        mask[poisoned] |= 1 << exp.mask_planes["NO_DATA"]
        core = slice(start - lo, stop - lo)
        edge = self._edge_rows[start:stop, None] | self._edge_cols[None, :]
        out_image[edge] = source.image[core][edge]
        out_var[edge] = source.variance[core][edge]
        mask[edge] = exp.mask[core][edge] | (1 << exp.mask_planes["EDGE"])
        return exp.with_(image=out_image, variance=out_var, mask=mask,
                         xy0=(x0, y0 + start))

    def _variance(self, padded: np.ndarray, start: int, stop: int) -> np.ndarray:
        """``V ⋆ K²`` of the band's rows, ``K`` at each block centre (whole-image tiles)."""
        from scipy import fft

        ny, nx = self.shape
        half, block = self.half, self.block
        x0, y0 = self.xy0
        out = np.zeros((stop - start, nx), dtype=np.float32)
        for by in range(start, stop, block):
            for bx in range(0, nx, block):
                sy, sx = min(block, ny - by), min(block, nx - bx)
                k2 = self.kernel.image_at(bx + 0.5 * (sx - 1) + x0, by + 0.5 * (sy - 1) + y0) ** 2
                tile = padded[by - start : by - start + sy + 2 * half, bx : bx + sx + 2 * half]
                shape = [fft.next_fast_len(s, True) for s in tile.shape]
                conv = fft.irfft2(fft.rfft2(tile, shape)
                                  * fft.rfft2(k2[::-1, ::-1].astype(np.float32), shape), shape)
                out[by - start : by - start + sy, bx : bx + sx] = \
                    conv[2 * half : 2 * half + sy, 2 * half : 2 * half + sx]
        return out
