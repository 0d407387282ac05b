"""Small seeded stamp sets with a known kernel, for the fidelity unit tests."""

from __future__ import annotations

import numpy as np

from psfmatch.convolution import correlate
from psfmatch.synth import gaussian_psf_image


def gaussian_kernel(size: int, sigma: float, *, dx: float = 0.0, dy: float = 0.0,
                    scale: float = 1.0) -> np.ndarray:
    """Point-sampled Gaussian kernel of sum ``scale`` centred at ``(dx, dy)`` px."""
    c = size // 2
    off = np.arange(size) - c
    k = np.outer(np.exp(-0.5 * ((off - dy) / sigma) ** 2), np.exp(-0.5 * ((off - dx) / sigma) ** 2))
    return scale * k / k.sum()


def stamp_set(rng: np.random.Generator, n: int, *, stamp: int, kernel, fluxes,
              sky_var: float = 100.0, template_noise: bool = False, template_sigma: float = 1.3,
              gain: float = 1.0):
    """``n`` template/science stamp pairs: a Gaussian star at a random sub-pixel centre.

    ``kernel`` is an array or a function ``i -> array`` (per-candidate kernel). Science
    = kernel ⋆ template₀ + Gaussian noise of variance ``sky_var + signal/gain``; the
    template is noiseless unless ``template_noise`` (then it gets the same sky noise).
    Returns ``(template, science)`` as ``(image, variance, mask)`` stacks.
    """
    t_img, t_var, s_img, s_var = [], [], [], []
    for i in range(n):
        k = kernel(i) if callable(kernel) else kernel
        dx, dy = rng.uniform(-0.5, 0.5, 2)
        t0 = fluxes[i] * gaussian_psf_image(2.3548 * template_sigma, stamp, dx=dx, dy=dy)
        s0 = correlate(t0, k)
        sv = sky_var + np.clip(s0, 0, None) / gain
        s_img.append(s0 + rng.normal(0.0, np.sqrt(sv)))
        s_var.append(sv)
        tv = np.full(t0.shape, sky_var)
        t_img.append(t0 + (rng.normal(0.0, np.sqrt(sky_var), t0.shape) if template_noise else 0.0))
        t_var.append(tv if template_noise else np.full(t0.shape, 1e-6))
    mask = np.zeros((n, stamp, stamp), dtype=np.int32)
    return ((np.array(t_img), np.array(t_var), mask), (np.array(s_img), np.array(s_var), mask))
