"""The one correlation operator used for fitting, applying and simulating kernels.

afw "convolution" is a correlation (the kernel is not flipped). For an image ``I`` and
an odd-sized kernel image ``K`` with centre index ``c = (w - 1) // 2``,

.. math::

    O(x, y) = \\sum_{k_x, k_y} K(k_x, k_y)\\, I(x + k_x - c_x,\\; y + k_y - c_y),

i.e. ``scipy.ndimage.correlate(I, K)``. A spatially varying kernel written as
:math:`K_{x,y} = \\sum_j f_j(x, y) B_j` (kernel evaluated at the *output* pixel) is
applied exactly as :math:`O = \\sum_j f_j \\cdot (I \\star B_j)`, one FFT correlation
per term. These functions act on plain arrays; what they do to masks and variance is
the caller's business (see the functions that take an :class:`~psfmatch.exposure.Exposure`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from psfmatch.cpus import available_cpus

__all__ = ["correlate", "correlate_spatial", "kernel_border"]


def _check_kernel(kernel: np.ndarray) -> np.ndarray:
    kernel = np.asarray(kernel, dtype=np.float64)
    if kernel.ndim != 2 or kernel.shape[0] % 2 == 0 or kernel.shape[1] % 2 == 0:
        msg = f"kernel must be a 2-D array with odd dimensions, got shape {kernel.shape}"
        raise ValueError(msg)
    return kernel


def kernel_border(kernel_shape: tuple[int, int]) -> tuple[int, int]:
    """Half-widths ``(by, bx)`` of the invalid border a kernel leaves on each side."""
    return (kernel_shape[0] // 2, kernel_shape[1] // 2)


def correlate(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Correlate ``image`` with ``kernel`` (afw convention), same-size float64 output.

    Pixels within ``kernel_border`` of the edge see zeros beyond the image and are
    not valid; callers mask or crop them.

    Parameters
    ----------
    image : ndarray, shape (ny, nx)
        Input image (not modified).
    kernel : ndarray, shape (h, w), h and w odd
        Kernel image; element ``[c_y + dy, c_x + dx]`` weights input pixel
        ``(x + dx, y + dy)``.

    Returns
    -------
    ndarray, shape (ny, nx), float64
    """
    from scipy import fft

    kernel = _check_kernel(kernel)
    image = np.asarray(image, dtype=np.float64)
    # correlation == convolution with the kernel flipped on both axes; cropping the
    # full convolution by the kernel half-widths keeps the centre element of an odd
    # kernel aligned with the output pixel.
    (ny, nx), (ky, kx) = image.shape, kernel.shape
    shape = [fft.next_fast_len(n + k - 1, True) for n, k in ((ny, ky), (nx, kx))]
    full = fft.irfft2(
        fft.rfft2(image, shape, workers=available_cpus())
        * fft.rfft2(kernel[::-1, ::-1], shape, workers=available_cpus()),
        shape,
        workers=available_cpus(),
    )
    return full[ky // 2 : ky // 2 + ny, kx // 2 : kx // 2 + nx]


def correlate_spatial(
    image: np.ndarray,
    kernels: Sequence[np.ndarray],
    weights: Sequence[np.ndarray | float],
) -> np.ndarray:
    """Apply a spatially varying kernel :math:`K_{x,y} = \\sum_j w_j(x, y) B_j`.

    Parameters
    ----------
    image : ndarray, shape (ny, nx)
        Input image.
    kernels : sequence of ndarray
        Fixed kernel images ``B_j`` (all the same odd shape).
    weights : sequence of ndarray or float
        ``w_j`` evaluated at every output pixel (arrays broadcastable to
        ``image.shape``) or constants.

    Returns
    -------
    ndarray, float64
        :math:`\\sum_j w_j \\cdot (I \\star B_j)`; the kernel is evaluated at the output
        pixel, exactly (no interpolation between kernel evaluations).
    """
    if len(kernels) != len(weights):
        msg = f"got {len(kernels)} kernels but {len(weights)} weights"
        raise ValueError(msg)
    if not kernels:
        msg = "correlate_spatial needs at least one kernel"
        raise ValueError(msg)
    shapes = {np.shape(k) for k in kernels}
    if len(shapes) != 1:
        msg = f"all kernels must share one shape, got {sorted(shapes)}"
        raise ValueError(msg)
    out = np.zeros(np.shape(image), dtype=np.float64)
    for kernel, weight in zip(kernels, weights, strict=True):
        out += np.asarray(weight, dtype=np.float64) * correlate(image, kernel)
    return out
