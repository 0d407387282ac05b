# ruff: noqa: E501, B023, N801, F841, B905  (research scripts: measurement, not library code)
"""Measurement harness for the fidelity research (simulated pairs, oracle comparison).

Not a test: helpers used by the scripts in this folder. Everything is in-process
(tests/integration/chain.py runs the kernel steps) and results are cached as JSON
under the work folder so that reruns are cheap.

Oracle: the true kernel the simulator used. ``std(D/σ)`` is taken on *star pixels*:
pixels within ``1.5 · FWHM_S`` of the truth catalogue's in-frame, unsaturated stars with
template flux ≥ ``star_flux_min`` (default 2000 ADU, S/N ≳ 20 in the demo pair), without
any of the statistics' bad planes, with the same ``σ`` (the difference's variance plane)
for the fitted and the true difference.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.integration.oracle import (  # noqa: E402,F401
    oracle_sigma,
    residual_detections,
    star_pixels,
    true_difference,
)

from psfmatch import io, steps, synth  # noqa: E402
from psfmatch.kernel import SpatialKernel  # noqa: E402

DEMO = {"seed": 42, "shape": [1024, 1024], "template_fwhm": 3.0, "science_fwhm": 4.5,
        "photometric_scale": 1.1}


def simulate(work: Path, simulation: dict) -> dict[str, Path]:
    work.mkdir(parents=True, exist_ok=True)
    p = {n: work / f"{n}.fits" for n in ("template", "science")}
    p["truth"] = work / "truth.json"
    p["sources"] = work / "sources.parquet"
    if not p["truth"].exists():
        steps.simulate(simulation=simulation, template_path=p["template"],
                       science_path=p["science"], truth_path=p["truth"],
                       sources_path=p["sources"])
    return p


def run(work: Path, sim: dict[str, Path], overrides: dict, *, max_candidates: int = 1000):
    from tests.integration.chain import run_pair

    work.mkdir(parents=True, exist_ok=True)
    return run_pair(work, sim["template"], sim["science"], psf_match_overrides=overrides,
                    max_candidates=max_candidates)


def kernel_l1(kernel: SpatialKernel, truth: synth.Truth, positions) -> dict[str, float]:
    out = {}
    for name, (x, y) in positions.items():
        fitted = kernel.image_at(x, y)
        true = truth.kernel.kernel_at(x, y)
        kf, kt = fitted.shape[0], true.shape[0]
        if kt > kf:
            c = (kt - kf) // 2
            true = true[c:-c, c:-c]
        elif kf > kt:
            c = (kf - kt) // 2
            pad = np.zeros_like(fitted)
            pad[c:-c, c:-c] = true
            true = pad
        out[name] = float(np.abs(fitted - true).sum() / np.abs(true).sum())
    return out


def kernel_l1_noise(kernel: SpatialKernel, positions) -> dict[str, float] | None:
    """Expected relative L1 error from the kernel's own covariance alone.

    ``E|e| = σ sqrt(2/π)`` per pixel for a Gaussian error of standard deviation ``σ``
    (pixel variances from ``SpatialKernel.image_variance_at``), summed and divided by
    ``Σ|K|``: the L1 error the fit would have if it were unbiased.
    """
    if kernel.covariance is None:
        return None
    out = {}
    for name, (x, y) in positions.items():
        sigma = np.sqrt(np.clip(kernel.image_variance_at(x, y), 0.0, None))
        out[name] = float(np.sqrt(2.0 / np.pi) * sigma.sum() / np.abs(kernel.image_at(x, y)).sum())
    return out


def positions(shape, margin=100):
    ny, nx = shape
    return {"centre": ((nx - 1) / 2, (ny - 1) / 2), "ll": (margin, margin),
            "lr": (nx - 1 - margin, margin), "ul": (margin, ny - 1 - margin),
            "ur": (nx - 1 - margin, ny - 1 - margin)}


def measure(products: dict[str, Path], sim: dict[str, Path], *, flux_min: float = 2000.0,
            truth=None, sources=None, fwhm=None, shift=None):
    """Oracle comparison of one chain run (see the module docstring).

    ``truth``/``sources`` default to the files of a :mod:`psfmatch.synth` pair; a
    crowded pair passes its own (anything with ``kernel.kernel_at/apply/centre``,
    ``background_at``, ``photometric_scale``), with ``fwhm`` and mean ``shift``.
    """
    if truth is None:
        truth = synth.Truth.from_dict(io.read_json(sim["truth"]))
        sources = io.read_table(sim["sources"]).columns
        fwhm, shift = truth.params.science_fwhm, truth.params.kernel_shift
    science = io.read_exposure(sim["science"])
    template = io.read_exposure(products["warped.fits"])
    diff = io.read_exposure(products["difference.fits"])
    kernel = SpatialKernel.read(products["kernel.fits"])
    metrics = io.read_json(products["metrics.json"])
    bad = diff.plane_bitmask(steps.STATS_BAD_PLANES)
    usable = ((diff.mask & bad) == 0) & np.isfinite(diff.image) & (diff.variance > 0)
    sigma = oracle_sigma(truth, science, template, usable)
    stars = star_pixels(sources, diff.shape, fwhm=fwhm, shift=shift, flux_min=flux_min) & usable
    extra = {}
    if getattr(truth, "saturated", None) is not None:  # crowded pairs: drop saturated wings
        from scipy import ndimage

        near = ndimage.binary_dilation(truth.saturated, iterations=int(3 * fwhm))
        stars &= ~near
        extra["det5_fit_unsat"] = residual_detections(diff.image / sigma, usable & ~near, fwhm)
        extra["det5_true_unsat"] = residual_detections(d_true_z := true_difference(truth, science, template) / sigma, usable & ~near, fwhm)
    z_fit = diff.image / sigma
    d_true = true_difference(truth, science, template)
    z_true = d_true / sigma
    std_fit, std_true = float(z_fit[stars].std()), float(z_true[stars].std())
    return {
        "std_star_fit": std_fit, "std_star_true": std_true, "oracle_ratio": std_fit / std_true,
        "n_star_pixels": int(stars.sum()),
        "kernel_sum": kernel.kernel_sum,
        "kernel_sum_error": kernel.kernel_sum / truth.photometric_scale - 1.0,
        "l1": kernel_l1(kernel, truth, positions(diff.shape, margin=min(100, diff.shape[0] // 8))),
        "det5_fit": residual_detections(z_fit, usable, fwhm),
        "det5_true": residual_detections(z_true, usable, fwhm),
        "clipped_std": metrics["difference"]["clipped_std"],
        "used": metrics["candidates"]["used_in_final_fit"],
        "regularization": metrics.get("regularization"),
        "uncertainty": metrics.get("uncertainty"),
        "l1_expected_from_covariance": kernel_l1_noise(kernel, positions(diff.shape, margin=min(100, diff.shape[0] // 8))),
        **extra,
    }


def cached(path: Path, fn):
    if path.exists():
        return json.loads(path.read_text())
    out = fn()
    path.write_text(json.dumps(out, indent=1, default=float))
    return out


CHOICES: list = []


class joint_lambda:
    """Context manager: risk-mode λ becomes one common λ (lambda_choice) in the chain.

    Wraps ``psfmatch.candidates.fit_single_kernels`` (which ``steps`` imports at call
    time): when it is called with a :class:`LambdaRule` of a risk type, the candidates'
    systems are built, one λ is chosen with ``choose_common_lambda`` and the fits run
    with that number. ``refine``: choose again on the candidates that pass the
    single-kernel clipping at the first λ, and refit.
    """

    def __init__(self, estimator="upre", refine=False, log_span=(-8.0, 3.0)):
        self.estimator, self.refine, self.log_span = estimator, refine, log_span

    def __enter__(self):
        from psfmatch import candidates, lambda_choice
        from psfmatch.regularization import LambdaRule

        self.original = original = candidates.fit_single_kernels
        est, refine, span = self.estimator, self.refine, self.log_span

        def wrapped(template, science, basis, **kw):
            rule = kw.get("regularization_lambda")
            if kw.get("regularization") is None or not isinstance(rule, LambdaRule) \
                    or rule.lambda_type not in ("minimizeUnbiasedRisk", "minimizeBiasedRisk"):
                return original(template, science, basis, **kw)
            h = kw["regularization"]
            systems, _ = lambda_choice.candidate_systems(
                template, science, basis, fit_background=kw["fit_background"],
                constant_variance_weighting=kw["constant_variance_weighting"])
            choice = lambda_choice.choose_common_lambda(systems, h, estimator=est, log_span=span)
            CHOICES.append(choice.to_dict())
            fits = original(template, science, basis, **{**kw, "regularization_lambda": choice.value})
            if refine:
                systems, _ = lambda_choice.candidate_systems(
                    template, science, basis, fit_background=kw["fit_background"],
                    constant_variance_weighting=kw["constant_variance_weighting"], rows=fits.good)
                choice = lambda_choice.choose_common_lambda(systems, h, estimator=est,
                                                            log_span=span)
                CHOICES.append(choice.to_dict())
                fits = original(template, science, basis,
                                **{**kw, "regularization_lambda": choice.value})
            return fits

        candidates.fit_single_kernels = wrapped
        return self

    def __exit__(self, *exc):
        from psfmatch import candidates

        candidates.fit_single_kernels = self.original
        return False


class pooled_df:
    """Context manager: the chain's spatial fit of a DF basis without PCA becomes the
    pooled regularized fit of :mod:`psfmatch.pooled_fit` (λ by ``estimator``, or fixed
    ``lam``). Records every choice in ``CHOICES``."""

    def __init__(self, estimator="upre", lam=None, log_span=(-8.0, 3.0), **options):
        self.estimator, self.lam, self.log_span = estimator, lam, log_span
        self.options = options

    def __enter__(self):
        from psfmatch import pooled_fit, spatial
        from psfmatch.regularization import regularization_matrix

        self.original = original = spatial.fit_spatial_reducing_order
        est, lam, span, options = self.estimator, self.lam, self.log_span, self.options

        def wrapped(centres, matrices, vectors, *, n_basis, kernel_function,
                    background_function, constant_first_term, compute_covariance=False, **kw):
            k = int(round(np.sqrt(n_basis)))
            if constant_first_term or k * k != n_basis or n_basis < 49:
                return original(centres, matrices, vectors, n_basis=n_basis,
                                kernel_function=kernel_function,
                                background_function=background_function,
                                constant_first_term=constant_first_term,
                                compute_covariance=compute_covariance, **kw)
            h = regularization_matrix(k)
            res = pooled_fit.fit_pooled_regularized(
                centres, np.asarray(matrices), np.asarray(vectors), h, n_basis=n_basis,
                kernel_function=kernel_function, background_function=background_function,
                regularization_lambda=lam, estimator=est, log_span=span,
                compute_covariance=compute_covariance, **options)
            CHOICES.append({**(res.choice.to_dict() if res.choice else {"value": lam, "relative": float("nan")}),
                            "pilot": res.pilot_lambda})
            record = {"kernel_order": kernel_function.order,
                      "background_order": None if background_function is None else background_function.order,
                      "geometric_condition": None, "condition_number": res.fit.condition_number,
                      "refused": None}
            return spatial.ReducedOrderFit(res.fit, kernel_function, background_function, [record])

        spatial.fit_spatial_reducing_order = wrapped
        return self

    def __exit__(self, *exc):
        from psfmatch import spatial

        spatial.fit_spatial_reducing_order = self.original
        return False


class auto_order:
    """Context manager: the spatial kernel order is chosen by two-fold cross-validation
    (:mod:`psfmatch.spatial_order`) among ``orders`` before every spatial fit."""

    def __init__(self, orders=(0, 1, 2, 3, 4)):
        self.orders = orders

    def __enter__(self):
        from psfmatch import spatial, spatial_order

        self.original = original = spatial.fit_spatial_reducing_order
        orders = self.orders

        def wrapped(centres, matrices, vectors, *, n_basis, kernel_function,
                    background_function, constant_first_term, **kw):
            choice = spatial_order.cross_validated_order(
                centres, matrices, vectors, n_basis=n_basis, kernel_function=kernel_function,
                background_function=background_function, constant_first_term=constant_first_term,
                orders=orders)
            CHOICES.append({"order": choice.order, "scores": choice.scores})
            kf = spatial.SpatialFunction(choice.order, kernel_function.model_type, kernel_function.bbox)
            return original(centres, matrices, vectors, n_basis=n_basis, kernel_function=kf,
                            background_function=background_function,
                            constant_first_term=constant_first_term, **kw)

        spatial.fit_spatial_reducing_order = wrapped
        return self

    def __exit__(self, *exc):
        from psfmatch import spatial

        spatial.fit_spatial_reducing_order = self.original
        return False
