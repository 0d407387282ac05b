# ruff: noqa: E501, B023, N801, F841, B905  (research scripts: measurement, not library code)
"""Measurement harness for the fidelity numbers (simulated pairs, oracle comparison).

Not a test: helpers used by the scripts in this folder. Everything is in-process
(tests/integration/chain.py runs the kernel steps with the shipped config plus the
given overrides, ``kernel_fit`` included) and results are cached as JSON under the work
folder so that reruns are cheap. The research variants that are not options of the
product (one common λ before the PCA, the pooled fit without its refinements) are on
the branch ``fidelity-research``.

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

from tests.integration.oracle import compare, residual_detections  # noqa: E402,F401

from psfmatch import io, synth  # noqa: E402
from psfmatch.kernel import SpatialKernel  # noqa: E402
from psfmatch.steps.simulate import simulate as simulate_step  # noqa: E402

DEMO = {"seed": 42, "shape": [1024, 1024], "template_fwhm": 3.0, "science_fwhm": 4.5,
        "photometric_scale": 1.1}


def simulate(work: Path, simulation: dict) -> dict[str, Path]:
    work.mkdir(parents=True, exist_ok=True)
    p = {n: work / f"{n}.fits" for n in ("template", "science")}
    p["truth"] = work / "truth.json"
    p["sources"] = work / "sources.parquet"
    if not p["truth"].exists():
        simulate_step(simulation=simulation, template_path=p["template"],
                       science_path=p["science"], truth_path=p["truth"],
                       sources_path=p["sources"])
    return p


def run(work: Path, sim: dict[str, Path], overrides: dict, *, max_candidates: int = 1000,
        sections: dict | None = None):
    """The chain on ``sim`` with ``psf_match`` ``overrides`` and our ``sections``."""
    from tests.integration.chain import run_pair

    work.mkdir(parents=True, exist_ok=True)
    return run_pair(work, sim["template"], sim["science"], psf_match_overrides=overrides,
                    max_candidates=max_candidates, config_overrides=sections)


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
    result = compare(products, sim["science"], truth, sources, fwhm=fwhm, shift=shift,
                     flux_min=flux_min, saturated=getattr(truth, "saturated", None))
    kernel = result["kernel"]
    metrics = io.read_json(products["metrics.json"])
    corners = positions(result["usable"].shape, margin=min(100, result["usable"].shape[0] // 8))
    return {
        **{k: v for k, v in result.items() if k not in ("kernel", "z_fit", "z_true", "usable")},
        "kernel_sum": kernel.kernel_sum,
        "l1": kernel_l1(kernel, truth, corners),
        "clipped_std": metrics["difference"]["clipped_std"],
        "used": metrics["candidates"]["used_in_final_fit"],
        "regularization": metrics.get("regularization"),
        "uncertainty": metrics.get("uncertainty"),
        "kernel_accuracy": metrics.get("kernel_accuracy"),
        "spatial_orders": metrics.get("spatial_orders"),
        "l1_expected_from_covariance": kernel_l1_noise(kernel, corners),
    }


def cached(path: Path, fn):
    if path.exists():
        return json.loads(path.read_text())
    out = fn()
    path.write_text(json.dumps(out, indent=1, default=float))
    return out
