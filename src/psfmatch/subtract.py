"""Apply the spatially varying kernel to a whole exposure and subtract.

Convolution follows afw with the production settings of ``AlardLuptonSubtractTask``
(``doNormalize = False``, ``doCopyEdge = True``; docs/warp-and-subtract.md#convolution) and
its mask policy (docs/warp-and-subtract.md#template-mask).
"""

from __future__ import annotations

import logging

import numpy as np

from psfmatch.cpus import available_cpus
from psfmatch.exposure import Exposure, remap_mask_bits
from psfmatch.kernel import SpatialKernel

__all__ = [
    "PRESERVE_TEMPLATE_PLANES",
    "RENAME_TEMPLATE_PLANES",
    "convolve_exposure",
    "or_filter",
    "prepare_template_mask",
    "subtract",
]

logger = logging.getLogger("psfmatch.subtract")

#: ``preserveTemplateMask``: template planes kept; every other template plane is cleared.
PRESERVE_TEMPLATE_PLANES = ("NO_DATA", "BAD", "HIGH_VARIANCE")
#: ``renameTemplateMask``: template planes copied to ``<NAME>_TEMPLATE`` before clearing.
RENAME_TEMPLATE_PLANES = ("SAT", "INJECTED", "INJECTED_CORE")
#: Science planes cleared before subtraction (``updateMasks``).
CLEAR_SCIENCE_PLANES = ("DETECTED", "DETECTED_NEGATIVE")


def or_filter(mask: np.ndarray, size: int) -> np.ndarray:
    """Bitwise OR of ``mask`` over a centred ``size × size`` box (odd ``size``).

    Out-of-image pixels count as 0. Separable; along each axis a doubling scheme
    (O(log size) shifted ORs of contiguous slices into two reused buffers) dilates every
    bit plane at once. Returns a new array of ``mask``'s dtype.
    """
    out = np.asarray(mask)
    if not out.any():
        return out.copy()
    for axis in (0, 1):
        out = _or_filter_1d(out, size, axis)
    return out


def _or_filter_1d(mask: np.ndarray, size: int, axis: int) -> np.ndarray:
    half = size // 2
    n = mask.shape[axis]

    def cut(start: int, stop: int) -> tuple[slice, ...]:
        return (slice(start, stop),) if axis == 0 else (slice(None), slice(start, stop))

    shape = list(mask.shape)
    shape[axis] = n + 2 * half
    run = np.zeros(shape, dtype=mask.dtype)
    run[cut(half, half + n)] = mask
    other = np.empty_like(run)
    # run[i] = OR of padded[i : i + width] along axis, for width = 1, 2, 4, ...
    width, length = 1, shape[axis]
    while width * 2 <= size:
        length -= width
        np.bitwise_or(run[cut(0, length)], run[cut(width, width + length)],
                      out=other[cut(0, length)])
        run, other = other, run
        width *= 2
    # OR of two overlapping runs of length `width` covers exactly `size` samples.
    out = np.empty_like(mask)
    np.bitwise_or(run[cut(0, n)], run[cut(size - width, size - width + n)], out=out)
    return out


def prepare_template_mask(
    template: Exposure,
    *,
    preserve: tuple[str, ...] = PRESERVE_TEMPLATE_PLANES,
    rename: tuple[str, ...] = RENAME_TEMPLATE_PLANES,
) -> Exposure:
    """ip_diffim ``updateMasks`` for the template; returns a new exposure.

    See docs/warp-and-subtract.md#template-mask.

    Planes in ``rename`` (``renameTemplateMask``, default :data:`RENAME_TEMPLATE_PLANES`)
    present in the template are copied to ``<NAME>_TEMPLATE``; every plane not in
    ``preserve`` (``preserveTemplateMask``, default :data:`PRESERVE_TEMPLATE_PLANES`) or a
    ``*_TEMPLATE`` copy is then cleared. Image and variance are shared, unchanged.
    """
    renamed = [p for p in rename if p in template.mask_planes]
    exp = template.with_planes([f"{p}_TEMPLATE" for p in renamed])
    mask = exp.mask.copy()
    for plane in renamed:
        mask[exp.plane(plane)] |= 1 << exp.mask_planes[f"{plane}_TEMPLATE"]
    keep = exp.plane_bitmask([*preserve, *(f"{p}_TEMPLATE" for p in renamed)])
    return exp.with_(mask=mask & keep)


def convolve_exposure(
    template: Exposure, kernel: SpatialKernel, *, variance_block: int = 512
) -> Exposure:
    """Convolve ``template`` with the spatially varying ``kernel`` (afw semantics).

    * image: :math:`\\sum_t f_t(x, y)\\,(T \\star K'_t)(x, y)`, the kernel evaluated
      exactly at every output pixel (``K'_t`` = :meth:`SpatialKernel.refactored`); one
      FFT correlation per spatial term; ``NO_DATA``/non-finite input pixels count as 0
      and poison every output pixel whose footprint contains them (NaN, ``NO_DATA``).
    * variance: :math:`\\sum K^2 V`, covariance ignored (as afw), with ``K`` evaluated at
      the centre of each ``variance_block``-pixel block (the kernel varies by well under
      a percent across a block for the smooth spatial models fitted here).
    * mask: OR of the mask bits of all input pixels under the kernel footprint (the full
      ``k × k`` box), i.e. every plane dilated by ``k // 2``.
    * edges (``doCopyEdge``): the ``k // 2`` border keeps the input pixel values (image,
      variance) and gets the ``EDGE`` bit.
    """
    from scipy import fft

    k = kernel.kernel_size
    half = k // 2
    ny, nx = template.shape
    x0, y0 = template.xy0
    no_data = template.plane_bitmask(["NO_DATA"])
    bad_input = ~np.isfinite(template.image) | ((template.mask & no_data) != 0)
    image = np.where(bad_input, 0.0, template.image).astype(np.float32)
    variance = np.where(bad_input | ~np.isfinite(template.variance), 0.0, template.variance)

    fshape = [fft.next_fast_len(s + k - 1, True) for s in (ny, nx)]
    image_ft = fft.rfft2(image, fshape, workers=available_cpus())
    ys = np.arange(ny, dtype=np.float64) + y0
    xs = np.arange(nx, dtype=np.float64) + x0
    out = np.zeros((ny, nx), dtype=np.float64)
    refactored = kernel.refactored()
    factors = kernel.kernel_function.separable_terms(xs[None, :], ys[:, None])
    n_terms = len(refactored)
    for t, ((fx, fy), kernel_t) in enumerate(zip(factors, refactored, strict=True), start=1):
        if not np.any(kernel_t):
            continue
        logger.info("convolving: spatial term %d/%d (%d x %d image)", t, n_terms, nx, ny)
        corr = _correlate_ft(image_ft, kernel_t, fshape, (ny, nx))
        corr *= fy
        corr *= fx
        out += corr
    del image_ft
    out_var = _blockwise_variance(
        variance.astype(np.float32), kernel, variance_block, template.xy0
    )

    exp = template.with_planes(["EDGE", "NO_DATA"])
    mask = or_filter(exp.mask, k)
    poisoned = or_filter(bad_input.astype(np.uint8), k).astype(bool)
    edge = np.zeros((ny, nx), dtype=bool)
    edge[:half, :] = edge[-half:, :] = edge[:, :half] = edge[:, -half:] = True
    out_image = out.astype(np.float32)
    out_image[poisoned] = np.nan
    out_var[poisoned] = np.inf
    mask[poisoned] |= 1 << exp.mask_planes["NO_DATA"]
    out_image[edge] = template.image[edge]
    out_var[edge] = template.variance[edge]
    mask[edge] = exp.mask[edge] | (1 << exp.mask_planes["EDGE"])
    return exp.with_(image=out_image, variance=out_var, mask=mask)


def _correlate_ft(
    image_ft: np.ndarray, kernel: np.ndarray, fshape: list[int], shape: tuple[int, int]
) -> np.ndarray:
    """Same-size correlation of the image whose rfft2 is ``image_ft`` with ``kernel``."""
    from scipy import fft

    k = kernel.shape[0]
    half = k // 2
    kernel_ft = fft.rfft2(kernel[::-1, ::-1].astype(np.float32), fshape, workers=available_cpus())
    full = fft.irfft2(image_ft * kernel_ft, fshape, workers=available_cpus())
    return full[half : half + shape[0], half : half + shape[1]]


def _blockwise_variance(
    variance: np.ndarray, kernel: SpatialKernel, block: int, xy0: tuple[int, int]
) -> np.ndarray:
    """``V ⋆ K²`` with ``K`` taken at the centre of each ``block × block`` region."""
    from scipy import fft

    ny, nx = variance.shape
    half = kernel.kernel_size // 2
    out = np.zeros((ny, nx), dtype=np.float32)
    padded = np.pad(variance, half)
    n_bands = -(-ny // block)
    for band, by in enumerate(range(0, ny, block), start=1):
        logger.info("variance: band %d/%d (%d rows of %d-px blocks)", band, n_bands,
                    min(block, ny - by), block)
        for bx in range(0, nx, block):
            sy, sx = min(block, ny - by), min(block, nx - bx)
            cx = bx + 0.5 * (sx - 1)
            cy = by + 0.5 * (sy - 1)
            k2 = kernel.image_at(cx + xy0[0], cy + xy0[1]) ** 2
            tile = padded[by : by + sy + 2 * half, bx : bx + sx + 2 * half]
            shape = [fft.next_fast_len(s, True) for s in tile.shape]
            conv = fft.irfft2(
                fft.rfft2(tile, shape) * fft.rfft2(k2[::-1, ::-1].astype(np.float32), shape), shape
            )
            out[by : by + sy, bx : bx + sx] = conv[2 * half : 2 * half + sy,
                                                   2 * half : 2 * half + sx]
    return out


def subtract(
    science: Exposure, matched: Exposure, kernel: SpatialKernel, *,
    subtract_background: bool = True,
) -> Exposure:
    """``D = S − matched − background`` (masked-image arithmetic).

    See docs/warp-and-subtract.md#subtraction.

    image: science − matched − background(x, y) (the background only with
    ``subtract_background``, ip_diffim's ``doSubtractBackground``); variance: var_S +
    var_matched; mask: science mask (``DETECTED``/``DETECTED_NEGATIVE`` cleared) OR
    matched mask, with the template planes carried under their ``*_TEMPLATE`` names.
    """
    sci = science.with_planes(matched.mask_planes)
    sci_mask = sci.mask & ~sci.plane_bitmask(CLEAR_SCIENCE_PLANES)
    remapped = remap_mask_bits(matched.mask, matched.mask_planes, sci.mask_planes)
    ny, nx = science.shape
    x0, y0 = science.xy0
    background = kernel.background_at(
        np.arange(nx, dtype=np.float64)[None, :] + x0, np.arange(ny, dtype=np.float64)[:, None] + y0
    ) if subtract_background else 0.0
    image = science.image.astype(np.float64) - matched.image - background
    return sci.with_(
        image=image.astype(np.float32),
        variance=science.variance + matched.variance,
        mask=sci_mask | remapped,
    )
