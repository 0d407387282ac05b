# ruff: noqa: E501, E402  (measurement script, not library code)
"""Crowded-field runs: psfmatch.synth.make_crowded_pair, ingest, the chain, the oracle.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 PYTHONPATH=src python bench/fidelity/crowded.py WORKDIR RUN [RUN ...]

Runs are named in RUNS (``psf_match`` overrides, ``kernel_fit`` keys, simulator
changes); both images go through the ``ingest`` step with the run's ``kernel_fit``, so
``estimate_saturation`` applies as in the workflow. Results are cached as
WORKDIR/<run>.json.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as h

from psfmatch import io
from psfmatch.steps.ingest import ingest
from psfmatch.synth import CrowdedParams, make_crowded_pair

BEFORE = {"spatial_order": "configured", "estimate_saturation": False}
BASE = CrowdedParams()
RUNS = {
    "before": ({}, BEFORE, BASE),
    "after": ({}, {}, BASE),
    "sat_masked_truth": ({}, {"spatial_order": "configured"}, dataclasses.replace(BASE, mask_saturation=True)),
    "sat_estimated_only": ({}, {"spatial_order": "configured"}, BASE),
    "order_search_only": ({}, {"estimate_saturation": False}, BASE),
    "after_all_stamps": ({"nStarPerCell": -1}, {}, BASE),
    "after_pix": ({"constantVarianceWeighting": False}, {}, BASE),
    "al_o2": ({"spatialKernelOrder": 2}, BEFORE, BASE),
    "al_o4_all": ({"spatialKernelOrder": 4, "nStarPerCell": -1}, BEFORE, BASE),
    "gaussian_stars_before": ({}, BEFORE, dataclasses.replace(BASE, psf_profile="gaussian")),
    "df_pooled": ({"kernelBasisSet": "delta-function"}, {}, BASE),
    "df_pooled_o2": ({"kernelBasisSet": "delta-function", "spatialKernelOrder": 2}, {}, BASE),
}

if __name__ == "__main__":
    work = Path(sys.argv[1])
    for name in sys.argv[2:]:
        overrides, kernel_fit, params = RUNS[name]

        def go():
            pair = make_crowded_pair(params)
            run = work / name
            run.mkdir(parents=True, exist_ok=True)
            sim = {}
            for role in ("template", "science"):
                raw = io.write_exposure(run / f"raw_{role}.fits", getattr(pair, role))
                sim[role] = run / f"{role}.fits"
                ingest(inputs={"image": str(raw)}, output_path=sim[role], label=role,
                       config={"kernel_fit": kernel_fit})
            products = h.run(run, sim, overrides, sections={"kernel_fit": kernel_fit})
            out = h.measure(products, sim, truth=pair, sources=pair.stars,
                            fwhm=pair.params.science_fwhm, shift=pair.params.kernel_shift,
                            flux_min=3000.0)
            out["inputs"] = io.read_json(products["metrics.json"])["inputs"]
            return out

        t = time.time()
        res = h.cached(work / f"{name}.json", go)
        l1 = res["l1"]
        print(f"{name:22s} t={time.time() - t:5.0f}s ratio={res['oracle_ratio']:.4f} ksum_err={100 * res['kernel_sum_error']:+.2f}% "
              f"L1 c={100 * l1['centre']:.1f}% corners={100 * max(l1[k] for k in ('ll', 'lr', 'ul', 'ur')):.1f}% "
              f"det5={res['det5_fit']}/{res['det5_true']} away from saturated {res.get('det5_fit_unsat')}/{res.get('det5_true_unsat')} "
              f"used={res['used']} order={(res.get('spatial_orders') or {}).get('used')}", flush=True)
