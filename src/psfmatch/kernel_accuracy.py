"""The fitted kernel's own statistical error at the centre and the four corners.

From the covariance :math:`\\Sigma` of the spatial kernel's coefficients
(:attr:`psfmatch.kernel.SpatialKernel.covariance`), at a position ``(x, y)``:

* ``kernel_sum_sigma``: :math:`\\sigma_\\Sigma = \\sqrt{g^T \\Sigma g}`, ``g`` the gradient
  of the kernel sum (units of the kernel sum, i.e. science counts per template count);
* ``pixel_sigma_max``: the largest per-pixel :math:`\\sigma(K[p])`;
* ``expected_l1``: :math:`\\sqrt{2/\\pi}\\,\\sum_p \\sigma(K[p]) / \\sum_p |K[p]|`, the
  expected relative L1 error :math:`\\sum|K_{\\rm fit} - K_{\\rm true}| / \\sum|K|` of an
  unbiased estimate with Gaussian errors (:math:`E|e| = \\sigma\\sqrt{2/\\pi}`).

When the covariance describes the error. It is :math:`M^{-1}` (or, for the pooled
delta-function fit, the sandwich :math:`A^{-1} M A^{-1}`, :math:`A = M + \\lambda H`) of
the weighted normal equations, so it can describe the error only when the weights are
the inverse variances of the pixels (``constantVarianceWeighting: false``) and the
estimate is unbiased: an Alard–Lupton kernel fitted with inverse-variance weights
(measured L1 errors at or below ``expected_l1`` at all five positions of simulated
bright pairs; ``"covariance": "describes the error"``). Otherwise it is a lower bound:

* with ip_diffim's default constant weighting a bright star's core is given the stamp's
  median (sky-dominated) variance, and the covariance understates the error 3–6× on
  simulated bright pairs;
* a regularized delta-function kernel's error is mostly the prior's bias and the
  noise of the first-pass kernel the pooled fit shrinks toward, neither of which is in
  the sandwich: measured L1 4–13× ``expected_l1`` on the simulated pairs;
* a PCA basis is estimated from the same candidates (the covariance is conditional on
  it), and a kernel varying faster than the spatial order allows is a model error.

docs/fitting.md#kernel-accuracy has the measurements.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["accuracy_positions", "kernel_accuracy", "unused_text"]


def accuracy_positions(bbox: Sequence[float], *, inset: float = 100.0) -> dict[str, tuple]:
    """Centre and corners of ``bbox`` (``x0, y0, x1, y1``, inclusive), corners inset.

    The corners are ``min(inset, width / 8)`` pixels in from each edge (candidates never
    reach the very edge: the corner of the bbox is an extrapolation of the spatial model).
    """
    x0, y0, x1, y1 = (float(v) for v in bbox)
    dx = min(inset, (x1 - x0) / 8.0)
    dy = min(inset, (y1 - y0) / 8.0)
    return {"centre": (0.5 * (x0 + x1), 0.5 * (y0 + y1)),
            "lower_left": (x0 + dx, y0 + dy), "lower_right": (x1 - dx, y0 + dy),
            "upper_left": (x0 + dx, y1 - dy), "upper_right": (x1 - dx, y1 - dy)}


def unused_text(unused: Mapping[str, int]) -> str:
    """``"stars not fitted: …"`` naming each non-zero count of ``unused`` (see
    :func:`kernel_accuracy`) and the setting that fits those stars; ``""`` if none."""
    left_out = []
    if unused.get("good_not_active", 0):
        left_out.append(f"{unused['good_not_active']} GOOD candidates beyond nStarPerCell "
                        "(nStarPerCell: -1 fits them)")
    if unused.get("over_max_candidates", 0):
        left_out.append(f"{unused['over_max_candidates']} detections beyond "
                        "detection.max_candidates (raise it to fit them)")
    return "stars not fitted: " + ", ".join(left_out) if left_out else ""


def kernel_accuracy(kernel, *, inverse_variance_weights: bool,
                    regularized: bool = False, pca_basis: bool = False,
                    noise_corrected: bool = False,
                    unused: Mapping[str, int] | None = None) -> dict[str, Any]:
    """The kernel's own error at :func:`accuracy_positions` of its bbox (module docstring).

    Parameters
    ----------
    kernel : SpatialKernel
        With a covariance.
    inverse_variance_weights : bool
        Whether the fit weighted pixels by their inverse variance (the covariance is
        then the error of the estimate, else a lower bound).
    regularized, pca_basis : bool
        Delta-function fit with a smoothness penalty (the covariance omits its bias) /
        a PCA basis estimated from the same data (the covariance is conditional on it).
    noise_corrected : bool
        With constant weights, the candidates were weighted by the variance under their
        model in the spatial fit (``kernel_fit.candidate_weights: noise_corrected``):
        the covariance is then an approximation on the safe side, not a lower bound.
    unused : mapping, optional
        Stars that passed selection but were not fitted: ``good_not_active`` (GOOD
        candidates beyond ``nStarPerCell`` in their cell) and ``over_max_candidates``
        (detections beyond ``detection.max_candidates``). Copied to the result; the
        note names each non-zero count and the setting that fits those stars.

    Returns
    -------
    dict
        ``positions``: ``{name: {x, y, kernel_sum, kernel_sum_sigma, pixel_sigma_max,
        expected_l1}}``; ``covariance``: ``"describes the error"``, ``"approximate"`` or
        ``"lower bound"``; ``note``: one sentence saying what the numbers do not contain;
        ``unused`` as given.
    """
    positions = {}
    for name, (x, y) in accuracy_positions(kernel.bbox).items():
        image = kernel.image_at(x, y)
        sigma = np.sqrt(kernel.image_variance_at(x, y))
        norm = float(np.abs(image).sum())
        positions[name] = {
            "x": float(x), "y": float(y), "kernel_sum": float(image.sum()),
            "kernel_sum_sigma": float(np.sqrt(kernel.sum_variance_at(x, y))),
            "pixel_sigma_max": float(sigma.max()),
            "expected_l1": float(np.sqrt(2.0 / np.pi) * sigma.sum() / norm) if norm > 0
            else float("nan"),
        }
    caveats = []
    if not inverse_variance_weights and noise_corrected:
        caveats.append("constant weights per stamp, candidates weighted by the variance "
                       "under their model: an approximation (2x the measured L1 on a "
                       "simulated 2048x2048 pair)")
    elif not inverse_variance_weights:
        caveats.append("constant weights per stamp (constantVarianceWeighting: true) "
                       "understate the error of bright stars (3-6x on simulated bright pairs)")
    if regularized:
        caveats.append("the prior's bias and the noise of the first-pass kernel are not "
                       "included (measured L1 4-13x expected_l1 on simulated pairs)")
    if pca_basis:
        caveats.append("conditional on the PCA basis estimated from the same candidates")
    caveats.append("a kernel varying faster than the spatial order allows is not included")
    unused = {k: int(v) for k, v in (unused or {}).items()}
    left_out = unused_text(unused)
    if left_out:
        caveats.append(left_out + "; fitting them lowers the error, less than as "
                       "1/sqrt(candidates) since they are fainter, at more fitting time")
    trusted = inverse_variance_weights and not regularized and not pca_basis
    approximate = (not inverse_variance_weights and noise_corrected and not regularized
                   and not pca_basis)
    label = ("describes the error" if trusted else "approximate" if approximate
             else "lower bound")
    return {"positions": positions, "covariance": label, "note": "; ".join(caveats),
            "unused": unused}
