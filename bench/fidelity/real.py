# ruff: noqa: E501, B023, N801, F841, B905  (research scripts: measurement, not library code)
"""Real crowded pairs (../shared/data/real): our chain variants against HOTPANTS.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 PYTHONPATH=src python bench/fidelity/real.py WORKDIR PAIR RUN [RUN ...]

PAIR: ``m17`` (2MASS Ks atlas tiles, different grids, ~14 % overlap) or ``jwst`` (NIRCam
F200W cluster field, one grid). Metrics on the usable pixels of the difference:
robust std of D/σ, std of D/σ on *star pixels* (within 1.5 FWHM of science detections
with S/N ≥ 20), and the number of 5σ residual detections (D/σ filtered by a Gaussian of
the science FWHM). HOTPANTS (if built at /work/peers-build/hotpants/hotpants) runs on
the same warped template and science, its D/σ from its own noise image, on the same
pixels.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as h  # noqa: E402

from psfmatch import io  # noqa: E402
from psfmatch.diagnostics import STATS_BAD_PLANES  # noqa: E402
from psfmatch.steps.ingest import ingest as steps_ingest  # noqa: E402

REAL = Path("/work/shared/data/real")
HOTPANTS = Path("/work/peers-build/hotpants/hotpants")
JWST_T = "jw01324001001-01324-o001_t001_nircam_clear-f200w_i2d_stamp"
JWST_S = "jw02561001002-02561-o001_t003_nircam_clear-f200w_i2d_stamp"
PAIRS = {
    "m17": ({"image": str(REAL / "twomass_m17_ks/aK_asky_990502s1350080.fits.gz")},
            {"image": str(REAL / "twomass_m17_ks/aK_asky_990502s1420198.fits.gz")},
            # no GAIN in the headers; the atlas tiles are resampled (correlated, lower
            # pixel noise): 200 e-/DN makes sky/gain match the pixel-difference noise
            # (1.5-2.2 DN at a sky of ~645 DN)
            200.0),
    "jwst": ({"image": str(REAL / f"jwst_nircam_a2744_f200w/{JWST_T}.fits"),
              "error": str(REAL / f"jwst_nircam_a2744_f200w/{JWST_T}.noise.fits")},
             {"image": str(REAL / f"jwst_nircam_a2744_f200w/{JWST_S}.fits"),
              "error": str(REAL / f"jwst_nircam_a2744_f200w/{JWST_S}.noise.fits")}, None),
}
BEFORE = {"spatial_order": "configured", "estimate_saturation": False}
#: run -> (psf_match overrides, kernel_fit keys)
RUNS = {
    "al": ({}, {}),
    "al_before": ({}, BEFORE),
    "al_all": ({"nStarPerCell": -1}, {}),
    "al_pix": ({"constantVarianceWeighting": False}, {}),
    "al_nc": ({}, {"candidate_weights": "noise_corrected"}),
    "df_pooled": ({"kernelBasisSet": "delta-function"}, {}),
    "df_pooled_fd": ({"kernelBasisSet": "delta-function"}, {"df_prior": "finite_difference"}),
    "df_pooled_all": ({"kernelBasisSet": "delta-function", "nStarPerCell": -1}, {}),
}


def ingest_pair(work: Path, pair: str, kernel_fit: dict) -> dict[str, Path]:
    t_in, s_in, gain = PAIRS[pair]
    out = {"template": work / "template.fits", "science": work / "science.fits"}
    for role, inputs in (("template", t_in), ("science", s_in)):
        if not out[role].exists():
            steps_ingest(inputs=inputs, output_path=out[role], label=role,
                         reader={"gain": gain} if gain else {},
                         config={"kernel_fit": kernel_fit})
    return out


def metrics(diff_image, sigma, usable, science_table, fwhm):
    z = np.where(usable, diff_image / sigma, np.nan)
    zz = z[usable & np.isfinite(z)]
    mad = 1.4826 * np.median(np.abs(zz - np.median(zz)))
    ny, nx = diff_image.shape
    stars = np.zeros((ny, nx), bool)
    r = 1.5 * fwhm
    ri = int(np.ceil(r))
    oy, ox = np.mgrid[-ri:ri + 1, -ri:ri + 1]
    disk = ox**2 + oy**2 <= r * r
    for x, y in science_table:
        yy, xx = int(round(y)) + oy[disk], int(round(x)) + ox[disk]
        ok = (yy >= 0) & (yy < ny) & (xx >= 0) & (xx < nx)
        stars[yy[ok], xx[ok]] = True
    stars &= usable & np.isfinite(z)
    return {"robust_std": float(mad), "std_all": float(np.std(zz)), "std_star": float(np.std(z[stars])),
            "n_star_pixels": int(stars.sum()),
            "det5": h.residual_detections(np.nan_to_num(z), usable & np.isfinite(z), fwhm),
            "n_pixels": int(zz.size)}


def run_hotpants(work: Path, warped: Path, science: Path, usable_common=None):
    if not HOTPANTS.exists():
        return None
    from astropy.io import fits

    hp = work / "hotpants"
    hp.mkdir(exist_ok=True)
    t, s = io.read_exposure(warped), io.read_exposure(science)
    bad = ~np.isfinite(t.image) | ~np.isfinite(s.image) | ~(t.variance > 0) | ~(s.variance > 0)
    fill = lambda a: np.where(bad, 0.0, a).astype(np.float32)  # noqa: E731
    for name, arr in (("t.fits", fill(t.image)), ("s.fits", fill(s.image)),
                      ("tn.fits", np.where(bad, 1e10, np.sqrt(np.abs(t.variance))).astype(np.float32)),
                      ("sn.fits", np.where(bad, 1e10, np.sqrt(np.abs(s.variance))).astype(np.float32))):
        fits.writeto(hp / name, arr, overwrite=True)
    lo = float(min(np.percentile(t.image[~bad], 0.1), np.percentile(s.image[~bad], 0.1)))
    hi = float(max(t.image[~bad].max(), s.image[~bad].max())) * 1.01
    cmd = [str(HOTPANTS), "-inim", str(hp / "s.fits"), "-tmplim", str(hp / "t.fits"),
           "-outim", str(hp / "d.fits"), "-oni", str(hp / "dn.fits"),
           "-tni", str(hp / "tn.fits"), "-ini", str(hp / "sn.fits"), "-c", "t", "-n", "i",
           "-tu", f"{hi}", "-iu", f"{hi}", "-tl", f"{lo}", "-il", f"{lo}",
           "-tuk", f"{hi}", "-iuk", f"{hi}", "-v", "0"]
    t0 = time.time()
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if res.returncode != 0:
        print("hotpants failed", res.stderr[-2000:])
        return None
    d = fits.getdata(hp / "d.fits").astype(float)
    dn = fits.getdata(hp / "dn.fits").astype(float)
    return d, dn, bad, time.time() - t0


def main():
    work, pair = Path(sys.argv[1]), sys.argv[2]
    names = sys.argv[3:]
    rows = {}
    for name in names:
        overrides, kernel_fit = RUNS[name]
        if pair == "m17":  # the overlap strip is 73 px wide: cells must fit in it
            overrides = {**overrides, "sizeCellX": 64, "sizeCellY": 64}
        base = work / pair / name
        base.mkdir(parents=True, exist_ok=True)
        cache = base / "result.json"
        t = time.time()
        if cache.exists():
            rows[name] = json.loads(cache.read_text())
        else:
            sim = ingest_pair(base, pair, kernel_fit)
            products = h.run(base / "run", sim, overrides, sections={"kernel_fit": kernel_fit})
            diff = io.read_exposure(products["difference.fits"])
            usable = ((diff.mask & diff.plane_bitmask(STATS_BAD_PLANES)) == 0) & \
                np.isfinite(diff.image) & (diff.variance > 0)
            psf = io.read_json(products["psf.json"])
            det = io.read_table(products["detect.parquet"]).columns
            sel = det["snr"] >= 20
            xy0 = diff.xy0
            table = list(zip(det["x"][sel] - xy0[0], det["y"][sel] - xy0[1]))
            m = metrics(diff.image, np.sqrt(np.where(usable, diff.variance, 1.0)), usable, table,
                        psf["science"]["fwhm"])
            mm = io.read_json(products["metrics.json"])
            m.update({"kernel_sum": mm["kernel_sum"], "used": mm["candidates"]["used_in_final_fit"],
                      "clipped_std": mm["difference"]["clipped_std"], "fwhm": psf,
                      "orders": mm["spatial_orders"]["used"],
                      "seconds": time.time() - t})
            hp = run_hotpants(base, products["warped.fits"], sim["science"])
            if hp is not None:
                d, dn, bad, secs = hp
                from scipy import ndimage

                # HOTPANTS leaves garbage within its kernel+stamp reach of invalid input
                # pixels; compare both only where neither is near one (20 px)
                far = ~ndimage.binary_dilation(bad, iterations=20)
                common = usable & far & np.isfinite(d) & (dn > 0) & (dn < 1e9)
                m["hotpants"] = metrics(d, np.where(common, dn, 1.0), common, table,
                                        psf["science"]["fwhm"])
                m["ours_on_common"] = metrics(diff.image, np.sqrt(np.where(common, diff.variance, 1.0)),
                                              common, table, psf["science"]["fwhm"])
                m["hotpants"]["seconds"] = secs
            cache.write_text(json.dumps(m, indent=1, default=float))
            rows[name] = m
        m = rows[name]
        line = (f"{pair} {name:16s} ksum={m['kernel_sum']:.4f} robust_std={m['robust_std']:.3f} "
                f"std_star={m['std_star']:.3f} excess={m['std_star']/m['robust_std']:.3f} det5={m['det5']} "
                f"used={m['used']} orders={m.get('orders')}")
        if "hotpants" in m:
            hp_, oc = m["hotpants"], m["ours_on_common"]
            line += (f" | common px: ours excess={oc['std_star']/oc['robust_std']:.3f} det5={oc['det5']}"
                     f" HOTPANTS std_star={hp_['std_star']:.3f} robust={hp_['robust_std']:.3f} "
                     f"excess={hp_['std_star']/hp_['robust_std']:.3f} det5={hp_['det5']}")
        print(line, flush=True)


if __name__ == "__main__":
    main()
