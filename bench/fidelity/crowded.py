# ruff: noqa: E501, B023, N801, F841, B905  (research scripts: measurement, not library code)
"""Crowded-field runs: simulate (psfmatch.synth_crowded), run the chain, compare to the oracle.

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/fidelity/crowded.py WORKDIR RUN [RUN ...]

Runs are named in RUNS below; results are cached as WORKDIR/<run>.json.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as h  # noqa: E402

from psfmatch import io  # noqa: E402
from psfmatch.synth.crowded import CrowdedParams, make_crowded_pair  # noqa: E402

_PAIRS: dict = {}


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def estimate_and_mask_saturation(exposure):
    """What ingest would do for an image without SAT mask or keyword (saturation module)."""
    from psfmatch.saturation import estimate_saturation_level, saturation_mask

    est = estimate_saturation_level(exposure.image)
    if est.level is not None:
        hit = saturation_mask(exposure.image, est.level)
        exposure.mask[hit] |= exposure.plane_bitmask(["SAT"])
    return est


def simulate(work: Path, params: CrowdedParams, *, estimate_saturation: bool = False):
    key = (str(work), params, estimate_saturation)
    if key in _PAIRS:
        return _PAIRS[key]
    work.mkdir(parents=True, exist_ok=True)
    pair = make_crowded_pair(params)
    if estimate_saturation:
        for role in ("template", "science"):
            est = estimate_and_mask_saturation(getattr(pair, role))
            print(f"{role}: saturation estimate {est}", flush=True)
    sim = {"template": work / "template.fits", "science": work / "science.fits"}
    if not sim["science"].exists():
        io.write_exposure(sim["template"], pair.template)
        io.write_exposure(sim["science"], pair.science)
        (work / "params.json").write_text(json.dumps(dataclasses.asdict(params), default=list))
    _PAIRS[key] = (pair, sim)
    return pair, sim


def measure(pair, sim, products, flux_min):
    return h.measure(products, sim, truth=pair, sources=pair.stars, fwhm=pair.params.science_fwhm,
                     shift=pair.params.kernel_shift, flux_min=flux_min)


def report(name, res, dt):
    l1 = res["l1"]
    print(f"{name:26s} t={dt:5.0f}s ratio={res['oracle_ratio']:.4f} (fit {res['std_star_fit']:.3f} true "
          f"{res['std_star_true']:.3f}) ksum_err={100*res['kernel_sum_error']:+.2f}% "
          f"L1 c={100*l1['centre']:.1f}% corners={100*max(l1[k] for k in ('ll','lr','ul','ur')):.1f}% "
          f"det5={res['det5_fit']}/{res['det5_true']} unsat {res.get('det5_fit_unsat')}/{res.get('det5_true_unsat')} used={res['used']} clipped_std={res['clipped_std']:.3f}",
          flush=True)


BASE = CrowdedParams()
DF = {"kernelBasisSet": "delta-function", "lambdaType": "minimizeUnbiasedRisk",
      "lambdaMin": -2.0, "lambdaMax": 8.0, "constantVarianceWeighting": False,
      "usePcaForSpatialKernel": False}
RUNS = {
    "al": ({}, None, BASE),
    "al_sat_masked": ({}, None, dataclasses.replace(BASE, mask_saturation=True)),
    "df_pooled": (DF, lambda: h.pooled_df("upre"), BASE),
    "df_pooled_o2": ({**DF, "spatialKernelOrder": 2}, lambda: h.pooled_df("upre"), BASE),
    "al_o2": ({"spatialKernelOrder": 2}, None, BASE),
    "al_o2_all": ({"spatialKernelOrder": 2, "nStarPerCell": -1}, None, BASE),
    "al_o3_all": ({"spatialKernelOrder": 3, "nStarPerCell": -1}, None, BASE),
    "al_o4_all": ({"spatialKernelOrder": 4, "nStarPerCell": -1}, None, BASE),
    "al_o4_all_masked": ({"spatialKernelOrder": 4, "nStarPerCell": -1}, None, dataclasses.replace(BASE, mask_saturation=True)),
    "al_o4_all_est": ({"spatialKernelOrder": 4, "nStarPerCell": -1}, None, BASE),
    "al_all_est": ({"nStarPerCell": -1}, None, BASE),
    "al_est": ({}, None, BASE),
    "al_auto_all_est": ({"nStarPerCell": -1}, None, BASE),
    "al_auto_est": ({}, None, BASE),
    "al_pix_auto_est": ({"constantVarianceWeighting": False}, None, BASE),
    "al_pix": ({"constantVarianceWeighting": False}, None, BASE),
    "dfpca_auto_est": ({**DF, "usePcaForSpatialKernel": True}, None, BASE),
    "dfpca_est": ({**DF, "usePcaForSpatialKernel": True}, None, BASE),
    "al_o4_all_k45": ({"spatialKernelOrder": 4, "nStarPerCell": -1, "kernelSizeMax": 45}, None, BASE),
}

if __name__ == "__main__":
    work = Path(sys.argv[1])
    for name in sys.argv[2:]:
        overrides, ctx, params = RUNS[name]
        est = name.endswith("_est")
        tag = "masked" if params.mask_saturation else ("estsat" if est else "base")
        pair, sim = simulate(work / f"sim_{tag}_{params.seed}", params, estimate_saturation=est)
        t = time.time()
        auto = "_auto" in name

        def go():
            h.CHOICES.clear()
            if ctx is None and not auto:
                return measure(pair, sim, h.run(work / name, sim, overrides), 3000.0)
            with (ctx() if ctx else h.auto_order()) as _, (h.auto_order() if auto and ctx else _null()):
                out = measure(pair, sim, h.run(work / name, sim, overrides), 3000.0)
            out["choices"] = list(h.CHOICES)
            return out

        res = h.cached(work / f"{name}.json", go)
        report(name, res, time.time() - t)
        if res.get("choices"):
            print("   choices", [c.get("order", c.get("relative")) for c in res["choices"]])
