r"""Separable interpolation kernels of the warp: bilinear and Lanczos-n.

With :math:`i_0 = \lfloor x \rfloor` and :math:`f = x - i_0 \in [0, 1)`, the taps are
the columns :math:`i_0 + k`: Lanczos-:math:`n` uses :math:`k = -(n-1), \dots, n`
(:math:`2n` taps) with :math:`w_k = L_n(f - k)`,
:math:`L_n(t) = \operatorname{sinc}(t)\operatorname{sinc}(t/n)`; bilinear uses
:math:`k = 0, 1` with :math:`w = (1 - f, f)`. The weights are normalised to unit sum.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from psfmatch.errors import WarpError

__all__ = ["KERNEL_NAMES", "InterpolationKernel", "resampling_kernel"]

#: Warping kernels afw's ``WarperConfig`` allows (``warpingKernelName``).
KERNEL_NAMES: tuple[str, ...] = ("bilinear", "lanczos3", "lanczos4", "lanczos5")


@dataclass(frozen=True)
class InterpolationKernel:
    """A separable interpolation kernel: ``ntaps`` taps at ``i0 + lo ... i0 + lo + ntaps - 1``."""

    name: str
    order: int  # Lanczos order n; 0 for bilinear

    @property
    def ntaps(self) -> int:
        return 2 if self.order == 0 else 2 * self.order

    @property
    def lo(self) -> int:
        return 0 if self.order == 0 else 1 - self.order

    def weights(self, frac: np.ndarray) -> np.ndarray:
        """Unit-sum 1-D weights, shape ``(ntaps, len(frac))``, float32, for ``frac`` in [0, 1).

        A tap has weight exactly 0 only where ``frac == 0`` (then the kernel is a copy of
        tap ``k = 0``); float32 is ample for interpolation weights (relative error 1e-7).
        """
        frac = np.asarray(frac, dtype=np.float64)
        if self.order == 0:
            w = np.empty((2, frac.size), dtype=np.float32)
            np.subtract(1.0, frac, out=w[0], casting="same_kind")
            w[1] = frac
            return w
        n = self.order
        k = np.arange(self.lo, self.lo + self.ntaps, dtype=np.float64)[:, None]
        # L_n(f - k) = n sin(pi (f - k)) sin(pi (f - k) / n) / (pi (f - k))^2 with
        # sin(pi (f - k)) = (-1)^k sin(pi f) and
        # sin(pi (f - k) / n) = sin(pi f / n) cos(pi k / n) - cos(pi f / n) sin(pi k / n).
        # The factor n sin(pi f) / pi^2 is common to all taps and cancels in the
        # normalisation, so it is dropped (f = 0, where it vanishes, is handled below).
        sign = np.where(k % 2 == 0, 1.0, -1.0)
        a = (sign * np.cos(np.pi * k / n)).astype(np.float32)
        b = (sign * np.sin(np.pi * k / n)).astype(np.float32)
        zero = frac == 0.0
        # keep (f - k)^2 non-zero in float32: tiny non-zero f (weights ~f^2 there), and f
        # just below 1 (which would round to 1.0); the clipping changes weights by < 1e-7
        f32 = np.clip(frac, 1e-12, 1.0 - 2.0**-24).astype(np.float32)
        s2 = np.sin(np.float32(np.pi / n) * f32)
        c2 = np.cos(np.float32(np.pi / n) * f32)
        x = f32 - k.astype(np.float32)
        np.multiply(x, x, out=x)
        w = s2 * a
        w -= c2 * b
        w /= x
        if np.any(zero):  # L_n(0) = 1, L_n(integer != 0) = 0: a pure copy of tap k = 0
            w[:, zero] = 0.0
            w[-self.lo, zero] = 1.0
        w /= w.sum(axis=0)
        return w


def resampling_kernel(name: str, what: str) -> InterpolationKernel:
    """The kernel called ``name`` (:data:`KERNEL_NAMES`); ``what`` names it in the error."""
    key = str(name).strip().lower()
    if key not in KERNEL_NAMES:
        msg = f"unknown {what} {name!r}; allowed: {', '.join(KERNEL_NAMES)}"
        raise WarpError(msg)
    return InterpolationKernel(key, 0 if key == "bilinear" else int(key[len("lanczos"):]))
