# ruff: noqa: E501, B023, N801, F841, B905, E402  (research script: measurement, not library code)
"""Simulated-pair runs behind the §1/§3 tables of notes/fidelity-findings.md.

    W=/tmp/fid/demo1024 SIM=demo OMP_NUM_THREADS=1 PYTHONPATH=src python bench/fidelity/sims.py RUN [RUN ...]

SIM: demo | bright | bright2048 | eqnoise | eqnoise_bright | jump. Results cached as $W/<run>.json.
"""
import logging
import os
import sys
import time

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from pathlib import Path

import harness as h

logging.basicConfig(level=logging.WARNING)
logging.getLogger("psfmatch.io").setLevel(logging.ERROR)
W = Path(os.environ.get("W", "/tmp/fid/demo1024"))
SIMS = {"demo": h.DEMO, "bright": {**h.DEMO, "gain": 10.0, "flux_min": 1.0e4},
        "bright2048": {**h.DEMO, "shape": [2048, 2048], "gain": 10.0, "flux_min": 1.0e4},
        "eqnoise": {**h.DEMO, "sky_template": 200.0},
        "eqnoise_bright": {**h.DEMO, "sky_template": 200.0, "gain": 10.0, "flux_min": 1.0e4},
        "jump": {"seed": 7, "shape": [768, 768], "star_density": 3000.0, "flux_min": 1.0e4,
                 "gain": 10.0, "tracking_jump": [3.0, 2.0, 0.35], "kernel_width_gradient": 0.1}}
sim = h.simulate(W / "sim", SIMS[os.environ.get("SIM", "demo")])
DF = {"kernelBasisSet": "delta-function"}
if os.environ.get("SIM") == "jump":
    DF = {**DF, "nStarPerCell": -1, "detectionConfig": {"fpGrowKernelScaling": 1.5}, "kernelSize": 17, "numPrincipalComponents": 3}
MAXC = 300 if os.environ.get("SIM") == "jump" else 1000
RISK = {**DF, "lambdaType": "minimizeUnbiasedRisk", "lambdaMin": -2.0, "lambdaMax": 8.0}
runs = {
 "al_unc": ({"calculateKernelUncertainty": True}, None),
 "al_cov": ({"calculateKernelUncertainty": True}, None),
 "al_cov_all": ({"calculateKernelUncertainty": True, "nStarPerCell": -1}, None),
 "al_cov_all3000": ({"calculateKernelUncertainty": True, "nStarPerCell": -1, "__maxc": 3000}, None),
 "al_cov_o2_all": ({"calculateKernelUncertainty": True, "nStarPerCell": -1, "spatialKernelOrder": 2}, None),
 "al_cov_core": ({"calculateKernelUncertainty": True, "useCoreStats": True}, None),
 "al_cov_pix": ({"calculateKernelUncertainty": True, "constantVarianceWeighting": False}, None),
 "al_cov_pix_all3000": ({"calculateKernelUncertainty": True, "constantVarianceWeighting": False, "nStarPerCell": -1, "__maxc": 3000}, None),
 "al": ({"nStarPerCell": -1, "detectionConfig": {"fpGrowKernelScaling": 1.5}, "singleKernelClipping": False, "spatialKernelClipping": False, "kernelSumClipping": False} if os.environ.get("SIM") == "jump" else {}, None),
 "df_abs02": (DF, None),
 "df_abs3e4": ({**DF, "lambdaValue": 3e4}, None),
 "df_upre_cand": (RISK, None),
 "df_upre_joint": (RISK, h.joint_lambda("upre")),
 "df_gcv_joint": (RISK, h.joint_lambda("gcv")),
 "df_ev_joint": (RISK, h.joint_lambda("evidence")),
 "df_upre_joint_refine": (RISK, h.joint_lambda("upre", refine=True)),

 "dfv_upre_cand": ({**RISK, "constantVarianceWeighting": False}, None),
 "dfv_upre_joint": ({**RISK, "constantVarianceWeighting": False}, h.joint_lambda("upre")),
 "dfv_ev_joint": ({**RISK, "constantVarianceWeighting": False}, h.joint_lambda("evidence")),
 "dfv_gcv_joint": ({**RISK, "constantVarianceWeighting": False}, h.joint_lambda("gcv")),

 "pooled_upre": ({**RISK, "constantVarianceWeighting": False, "usePcaForSpatialKernel": False}, h.pooled_df("upre")),
 "pooled_plain": ({**RISK, "constantVarianceWeighting": False, "usePcaForSpatialKernel": False}, h.pooled_df("upre", constant_sum=False, shape_prior=False)),
 "pooled_cs": ({**RISK, "constantVarianceWeighting": False, "usePcaForSpatialKernel": False}, h.pooled_df("upre", shape_prior=False)),
 "pooled_cs_shape": ({**RISK, "constantVarianceWeighting": False, "usePcaForSpatialKernel": False}, h.pooled_df("upre")),
 "pooled_cs_shape_cvw": ({**RISK, "usePcaForSpatialKernel": False}, h.pooled_df("upre")),
 "pooled_ev": ({**RISK, "constantVarianceWeighting": False, "usePcaForSpatialKernel": False}, h.pooled_df("evidence")),
}
for lv in (10, 100, 300, 1000, 3000, 10000, 1e5):
    runs[f"df_abs{lv:g}"] = ({**DF, "lambdaValue": float(lv)}, None)
only = sys.argv[1:] or list(runs)
for name in only:
    ov, ctx = runs[name]
    maxc = ov.get("__maxc", MAXC)
    ov = {k: v for k, v in ov.items() if k != "__maxc"}
    t = time.time()
    def go():
        h.CHOICES.clear()
        if ctx is None:
            out = h.measure(h.run(W / name, sim, ov, max_candidates=maxc), sim)
        else:
            with ctx:
                out = h.measure(h.run(W / name, sim, ov, max_candidates=maxc), sim)
        out["choices"] = list(h.CHOICES)
        return out
    res = h.cached(W / f"{name}.json", go)
    l1 = res["l1"]
    l1n = res.get("l1_expected_from_covariance") or {}
    if l1n:
        print(f"   covariance-only L1: c={100*l1n['centre']:.2f}% corners={100*max(l1n[k] for k in ('ll','lr','ul','ur')):.2f}%  measured per position {dict((k, round(100*v, 2)) for k, v in l1.items())}")
    print(f"{name:22s} t={time.time()-t:5.0f}s ratio={res['oracle_ratio']:.4f} ksum_err={100*res['kernel_sum_error']:+.2f}% "
          f"L1 c={100*l1['centre']:.1f}% corners={100*max(l1[k] for k in ('ll','lr','ul','ur')):.1f}% det5={res['det5_fit']}/{res['det5_true']} used={res['used']} "
          f"sig_ksum={100*((res.get('uncertainty') or {}).get('kernel_sum_sigma') or float('nan'))/1.1:.3f}% lam={(res['regularization'] or {}).get('lambda_median')} {[ (round(c['value'],1), round(c['relative'],3)) for c in res.get('choices', [])]}", flush=True)
