"""``kernel_fit``: our options of the kernel fit that ip_diffim's configs do not have.

Three choices where ip_diffim's own behaviour fails on data it was not tuned for
(docs/fitting.md#beyond-ip_diffim, measured numbers there):

* how a delta-function (DF) kernel's spatial model is fitted (``df_spatial_fit``):
  ``pooled`` fits the spatially varying DF kernel to all candidates at once with one
  regularization weight chosen from the data (:mod:`psfmatch.pooled_fit`); ``ip_diffim``
  keeps ip_diffim's per-candidate λ (``lambdaType`` …) and, with
  ``usePcaForSpatialKernel``, its PCA basis;
* whether the kernel's spatial order may be raised above ``spatialKernelOrder`` where
  the candidates show that the kernel varies faster (``spatial_order``,
  :mod:`psfmatch.spatial_order`);
* whether ingest estimates a saturation level from the image when neither a mask plane
  nor a keyword (nor the pairs sheet) gives one (``estimate_saturation``,
  :mod:`psfmatch.saturation`).

The defaults live here; ``workflow/schemas/config.schema.yaml`` documents their types.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from psfmatch.config.lsst import DF
from psfmatch.config.sections import _Section
from psfmatch.errors import ConfigError

__all__ = ["CANDIDATE_WEIGHTS", "DF_PRIORS", "DF_SPATIAL_FITS", "SPATIAL_ORDER_MODES",
           "KernelFitOptions", "check_kernel_fit"]

#: Values of :attr:`KernelFitOptions.df_spatial_fit`.
DF_SPATIAL_FITS = ("pooled", "ip_diffim")
#: Values of :attr:`KernelFitOptions.df_prior`.
DF_PRIORS = ("band_limited", "finite_difference")
#: Values of :attr:`KernelFitOptions.candidate_weights`.
CANDIDATE_WEIGHTS = ("ip_diffim", "noise_corrected")
#: Values of :attr:`KernelFitOptions.spatial_order`.
SPATIAL_ORDER_MODES = ("configured", "cross_validated")


@dataclass(frozen=True, kw_only=True)
class KernelFitOptions(_Section):
    """``kernel_fit``: DF spatial fit, spatial-order search, saturation from the data.

    Attributes
    ----------
    df_spatial_fit : {"pooled", "ip_diffim"}
        Delta-function basis only. ``pooled`` (default): the single-candidate fits (used
        for clipping only) weight pixels by their inverse variance and choose λ per
        candidate by the unbiased predictive risk on the relative scan below; the
        spatial kernel is fitted to all active candidates at once, with one λ chosen by
        the pooled unbiased predictive risk on the same relative scan, the kernel sum
        held constant over the field and the penalty projected off a first-pass
        kernel's shape. ``psf_match``'s ``lambdaType``/``lambdaValue``/``lambdaScaling``/
        ``lambdaMin``/``lambdaMax``/``lambdaStep``, ``constantVarianceWeighting`` and
        ``usePcaForSpatialKernel`` are then not used for the DF fit.
        ``ip_diffim``: those fields apply as in ip_diffim.
    df_lambda_range : (float, float)
        The λ scan of the ``pooled`` fit and of its single fits, in dex relative to the
        data's own scale :math:`\\lambda_{\\rm ref} = \\mathrm{tr}\\,M / \\mathrm{tr}\\,H`
        (so it does not depend on the images' flux units).
    df_lambda_step : float
        Step of that scan (dex); the minimum is refined by a parabola.
    df_prior : {"band_limited", "finite_difference"}
        The ``pooled`` fit's prior on the kernel. ``finite_difference``: ip_diffim's
        roughness penalty (``regularizationType`` …) projected off a first-pass kernel's
        shape. ``band_limited`` (default): a first pass with that penalty measures the
        kernel's width σ (adaptive moments); the kernel is then refitted as a sum of
        Gaussians of σ, one per pixel, with a ridge on their amplitudes (prior spectrum
        :math:`\\exp(-\\sigma^2 k^2)`, :func:`psfmatch.pooled_fit.fit_pooled_band_limited`),
        so the frequencies the template's PSF hides from the data are damped.
    candidate_weights : {"ip_diffim", "noise_corrected"}
        How the spatial fit weighs the candidates when ``constantVarianceWeighting``
        weights each stamp by its median variance. ``ip_diffim`` (default): their normal
        equations as they are, so a bright star counts as if seen on sky noise and the
        few brightest decide the spatial variation. ``noise_corrected``: each
        candidate's equations divided by :func:`psfmatch.fit.noise_scale`, the variance
        under its model relative to the median it was weighted by (within a stamp the
        weights stay ip_diffim's). For the kernel as a product: on a simulated 2048²
        pair the kernel's L1 error goes from 1.7/3.4 % to 0.8/1.8 % (centre/worst
        corner), but on the real JWST and 2MASS pairs the difference's residual excess
        is 2–3 % higher, hence not the default. No effect with inverse-variance weights
        or on the PCA refit.
    fit_mask_planes : tuple of str
        Mask planes the candidates' kernel fits (and their residual assessment) treat
        as missing: a flagged science pixel is left out of the fit; a flagged template
        pixel, which would be convolved into every model pixel around it, is filled
        with its stamp's median (:func:`psfmatch.candidates.fill_flagged_template`).
        ip_diffim consults no mask in the fit (it relies on interpolated cosmic rays);
        an uninterpolated cosmic ray in a bright candidate's template stamp then pulls
        the kernel (−20 % on the kernel sum of one bright star; −1.2 % on one demo
        realisation's delta-function kernel). Empty: every pixel as it is, as ip_diffim.
    spatial_order : {"configured", "cross_validated"}
        ``configured``: ``psf_match.spatialKernelOrder`` as given. ``cross_validated``:
        the order with the lowest two-fold (checkerboard) prediction error over the
        active candidates among ``spatialKernelOrder`` … ``max_spatial_order``; never
        below the configured order (with few candidates the cross-validation prefers
        too low an order). Applied to Alard–Lupton and PCA bases only, not to
        delta-function kernels fitted pixel by pixel (pooled or ip_diffim without PCA:
        the cost grows as the cube of the spatial terms times the kernel's pixels).
    max_spatial_order : int
        Highest order ``cross_validated`` may choose (0 … 6).
    estimate_saturation : bool
        At ingest, when an image has no pixel flagged ``SAT`` and no saturation level
        came from the pairs sheet or a header keyword, look for the pile-up of the
        brightest peaks at one level (:func:`psfmatch.saturation.estimate_saturation_level`)
        and, if found, flag ``SAT`` at and above 95 % of it, grown by 2 px.
    """

    df_spatial_fit: str = "pooled"
    df_lambda_range: tuple[float, ...] = (-8.0, 3.0)
    df_lambda_step: float = 0.05
    df_prior: str = "band_limited"
    candidate_weights: str = "ip_diffim"
    fit_mask_planes: tuple[str, ...] = ("NO_DATA", "BAD", "SAT", "CR", "EDGE")
    spatial_order: str = "cross_validated"
    max_spatial_order: int = 4
    estimate_saturation: bool = True

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> None:
            raise ConfigError(f"kernel_fit.{name} = {getattr(self, name)!r}: {why}")

        if self.df_spatial_fit not in DF_SPATIAL_FITS:
            bad("df_spatial_fit", f"use one of {list(DF_SPATIAL_FITS)}")
        if self.df_prior not in DF_PRIORS:
            bad("df_prior", f"use one of {list(DF_PRIORS)}")
        if self.candidate_weights not in CANDIDATE_WEIGHTS:
            bad("candidate_weights", f"use one of {list(CANDIDATE_WEIGHTS)}")
        if self.spatial_order not in SPATIAL_ORDER_MODES:
            bad("spatial_order", f"use one of {list(SPATIAL_ORDER_MODES)}")
        if len(self.df_lambda_range) != 2 or not self.df_lambda_range[0] < self.df_lambda_range[1]:
            bad("df_lambda_range", "must be [low, high] with low < high (dex)")
        if not 0 < self.df_lambda_step <= 1:
            bad("df_lambda_step", "must be in (0, 1] dex")
        if not 0 <= self.max_spatial_order <= 6:
            bad("max_spatial_order", "must be in 0..6")


def check_kernel_fit(psf_match: Mapping[str, Any] | None, kernel_fit: KernelFitOptions) -> None:
    """Cross-section rule: the ``pooled`` DF fit has no PCA step.

    ``psf_match`` is the ``psf_match`` block as written (LSST names): an explicit
    ``usePcaForSpatialKernel: true`` with ``kernelBasisSet: delta-function`` and
    ``df_spatial_fit: pooled`` asks for two different spatial fits.
    """
    block = dict(psf_match or {})
    if (block.get("kernelBasisSet") == DF and block.get("usePcaForSpatialKernel") is True
            and kernel_fit.df_spatial_fit == "pooled"):
        msg = ("psf_match.usePcaForSpatialKernel: true asks for ip_diffim's PCA spatial fit of "
               "delta-function kernels, but kernel_fit.df_spatial_fit is 'pooled' (one "
               "regularized fit to all candidates, no PCA); set kernel_fit.df_spatial_fit: "
               "ip_diffim for the PCA, or leave usePcaForSpatialKernel null")
        raise ConfigError(msg)
