"""Seeded simulator of template/science pairs with a known spatially varying kernel.

Model (science-pixel *parent* coordinates throughout, pixel centres at integers):

.. math::

    S = K_{x,y} \\star T_0 + b(x, y) + \\sum_{\\rm transients} F_i P^S_i
        + \\sum_{\\rm variables} (F^S_i - s F^T_i) P^S_i + n_S,
    \\qquad T = T_0 + n_T,

where :math:`T_0` is the noiseless template scene (pixel-integrated Gaussian stars of
width :math:`\\sigma_T` and PSF-convolved elliptical Gaussian galaxies), :math:`\\star` is
:func:`psfmatch.convolution.correlate_spatial` (afw convention: correlation, kernel
evaluated at the output pixel), :math:`b = b_0 + b_x u + b_y v` with normalised
coordinates :math:`u, v \\in [-1, 1]` over the science frame, and the truth kernel is
exactly

.. math::

    K_{x,y} = \\sum_{j=1}^{2} w_j(x, y)\\, B_j, \\quad
    B_j = s\\, \\frac{G(\\sigma_j, \\delta)}{\\sum G(\\sigma_j, \\delta)}, \\quad
    w_{1,2} = \\tfrac12 (1 \\mp m), \\quad m = a u + c v,\\; |a| + |c| = 1,

with point-sampled Gaussians :math:`G` centred on ``kernel_shift`` :math:`\\delta`
(with a ``tracking_jump`` :math:`(\\Delta, f)`, each :math:`G(\\sigma_j, \\delta)` becomes
:math:`(1-f)\\,G(\\sigma_j, \\delta) + f\\,G(\\sigma_j, \\delta + \\Delta)`, as from a
science exposure whose pointing jumped by :math:`\\Delta` for a fraction :math:`f` of the
time: two peaks, or a peak and a shoulder when :math:`|\\Delta| \\lesssim 2.5\\sigma_j`, in
either case outside the span of an Alard–Lupton basis),
:math:`\\sigma_{1,2}^2 = \\sigma_K^2 (1 \\mp d)`, :math:`\\sigma_K^2 = \\sigma_S^2 -
\\sigma_T^2`, so the kernel's second moment is :math:`\\sigma_K^2 (1 + d m)` and its sum is
:math:`s` everywhere. ``d`` is chosen so that :math:`(\\sigma_{\\max} - \\sigma_{\\min}) /
\\sigma_K` equals ``kernel_width_gradient``. Noise: Poisson in electrons on signal + sky,
plus Gaussian read noise, in ADU, sky then subtracted; the variance plane is the expected
variance :math:`(I + {\\rm sky}) / g + (r / g)^2`. Because of the correlation convention a
kernel centred on :math:`\\delta` moves stars by :math:`-\\delta` in the science image.

No file I/O here: :meth:`Truth.to_dict` gives JSON-able scalars, :meth:`Truth.catalogues`
plain dicts of numpy arrays. Each WCS maps 0-based *array* pixel indices (parent − xy0),
as a FITS header does.

from __future__ import annotations

Modules: :mod:`.params` (:class:`SimulationParams`), :mod:`.truth` (the truth kernel and
catalogues), :mod:`.render` (stars, galaxies, the PSF), :mod:`.pair` (:func:`make_pair`),
:mod:`.crowded` (:func:`make_crowded_pair`: a crowded field with Moffat wings, a kernel
on a grid of anchors and unflagged saturation, which fails like real crowded fields).
"""

from psfmatch.synth.crowded import CrowdedKernel, CrowdedPair, CrowdedParams, make_crowded_pair
from psfmatch.synth.pair import SimulatedPair, make_pair
from psfmatch.synth.params import BAD_COLUMN_VALUE, SimulationParams, kernel_sigmas
from psfmatch.synth.render import (
    SimulatedPsf,
    gaussian_psf_image,
    render_gaussians,
    science_psf_fwhm_at,
)
from psfmatch.synth.truth import Truth, TruthKernel, source_table

__all__ = [
    "BAD_COLUMN_VALUE",
    "CrowdedKernel",
    "CrowdedPair",
    "CrowdedParams",
    "SimulatedPair",
    "SimulatedPsf",
    "SimulationParams",
    "Truth",
    "TruthKernel",
    "gaussian_psf_image",
    "kernel_sigmas",
    "make_crowded_pair",
    "make_pair",
    "render_gaussians",
    "science_psf_fwhm_at",
    "source_table",
]
