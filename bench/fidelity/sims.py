# ruff: noqa: E501, E402  (measurement script, not library code)
"""Simulated-pair runs behind the DF / kernel-accuracy numbers (docs/fitting.md#beyond-ip_diffim).

    W=/tmp/fid/demo1024 SIM=demo OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 PYTHONPATH=src \\
        python bench/fidelity/sims.py RUN [RUN ...]

SIM: demo | bright | bright2048 | eqnoise | eqnoise_bright | jump; SEED: another
realisation of it (the twenty-seed demo numbers: SEED=1..20; 42 is the default). Each run
is the shipped config plus its ``psf_match`` overrides and ``kernel_fit`` keys; results
are cached as ``$W/<run>.json`` by name only, so clear ``$W`` after changing the code.
"""
import logging
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as h

logging.basicConfig(level=logging.WARNING)
logging.getLogger("psfmatch.io").setLevel(logging.ERROR)
W = Path(os.environ.get("W", "/tmp/fid/demo1024"))
SIM = os.environ.get("SIM", "demo")
SIMS = {"demo": h.DEMO, "bright": {**h.DEMO, "gain": 10.0, "flux_min": 1.0e4},
        "bright2048": {**h.DEMO, "shape": [2048, 2048], "gain": 10.0, "flux_min": 1.0e4},
        "eqnoise": {**h.DEMO, "sky_template": 200.0},
        "eqnoise_bright": {**h.DEMO, "sky_template": 200.0, "gain": 10.0, "flux_min": 1.0e4},
        "jump": {"seed": 7, "shape": [768, 768], "star_density": 3000.0, "flux_min": 1.0e4,
                 "gain": 10.0, "tracking_jump": [3.0, 2.0, 0.35], "kernel_width_gradient": 0.1}}
if os.environ.get("SEED"):  # another realisation of the same pair (use its own W)
    SIMS[SIM] = {**SIMS[SIM], "seed": int(os.environ["SEED"])}
sim = h.simulate(W / "sim", SIMS[SIM])
DF = {"kernelBasisSet": "delta-function"}
if SIM == "jump":  # test_df_recovery.py's sizes
    DF = {**DF, "nStarPerCell": -1, "detectionConfig": {"fpGrowKernelScaling": 1.5}, "kernelSize": 17, "numPrincipalComponents": 3}
MAXC = 300 if SIM == "jump" else 1000
IP = {"df_spatial_fit": "ip_diffim"}
RISK = {**DF, "lambdaType": "minimizeUnbiasedRisk", "lambdaMin": -2.0, "lambdaMax": 8.0}
UNC = {"calculateKernelUncertainty": True}
runs = {
    # Alard-Lupton: the shipped defaults, and ip_diffim's spatial order (before kernel_fit)
    "al": (UNC, {}),
    "al_before": (UNC, {"spatial_order": "configured"}),
    "al_pix": ({**UNC, "constantVarianceWeighting": False}, {}),
    "al_nc": (UNC, {"candidate_weights": "noise_corrected"}),
    "al_nomask": (UNC, {"fit_mask_planes": []}),
    "al_pix_all3000": ({**UNC, "constantVarianceWeighting": False, "nStarPerCell": -1, "__maxc": 3000}, {}),
    "al_all3000": ({**UNC, "nStarPerCell": -1, "__maxc": 3000}, {}),
    "al_all10000": ({**UNC, "nStarPerCell": -1, "__maxc": 10000}, {}),
    # delta functions: ip_diffim's path (λ 0.2 absolute + PCA; per-candidate risk λ) ...
    "df_abs02": (DF, IP),
    "df_abs3e4": ({**DF, "lambdaValue": 3e4}, IP),
    "df_upre_cand": (RISK, IP),
    "dfv_upre_cand": ({**RISK, "constantVarianceWeighting": False}, IP),
    # ... and the shipped default, the pooled fit (band-limited prior), and with
    # the roughness prior instead
    "df_pooled": ({**DF, **UNC}, {}),
    "df_pooled_fd": ({**DF, **UNC}, {"df_prior": "finite_difference"}),
    "df_pooled_nomask": ({**DF, **UNC}, {"fit_mask_planes": []}),
    "df_pooled_all3000": ({**DF, **UNC, "nStarPerCell": -1, "__maxc": 3000}, {}),
}
if SIM == "jump":
    runs["al"] = ({"nStarPerCell": -1, "detectionConfig": {"fpGrowKernelScaling": 1.5}, "singleKernelClipping": False, "spatialKernelClipping": False, "kernelSumClipping": False}, {})
for lv in (10, 100, 300, 1000, 3000, 10000, 1e5):
    runs[f"df_abs{lv:g}"] = ({**DF, "lambdaValue": float(lv)}, IP)
for name in sys.argv[1:] or list(runs):
    overrides, kernel_fit = runs[name]
    maxc = overrides.get("__maxc", MAXC)
    overrides = {k: v for k, v in overrides.items() if k != "__maxc"}
    t = time.time()
    res = h.cached(W / f"{name}.json", lambda: h.measure(h.run(
        W / name, sim, overrides, max_candidates=maxc, sections={"kernel_fit": kernel_fit}), sim))
    l1, acc = res["l1"], res.get("kernel_accuracy") or {}
    sigma = ((acc.get("positions") or {}).get("centre") or {}).get("kernel_sum_sigma")
    spatial = (res.get("regularization") or {}).get("spatial") or {}
    print(f"{name:16s} t={time.time() - t:5.0f}s ratio={res['oracle_ratio']:.4f} ksum_err={100 * res['kernel_sum_error']:+.3f}% "
          f"(1σ {'-' if sigma is None else f'{100 * sigma / 1.1:.3f}%'}) L1 c={100 * l1['centre']:.1f}% "
          f"corners={100 * max(l1[k] for k in ('ll', 'lr', 'ul', 'ur')):.1f}% det5={res['det5_fit']}/{res['det5_true']} "
          f"used={res['used']} order={(res.get('spatial_orders') or {}).get('used')} "
          f"λ_rel={spatial.get('relative')} covariance={acc.get('covariance')}", flush=True)
    expected = res.get("l1_expected_from_covariance")
    if expected:
        print(f"   L1 expected from the covariance: c={100 * expected['centre']:.2f}% corners={100 * max(expected[k] for k in ('ll', 'lr', 'ul', 'ur')):.2f}%")
