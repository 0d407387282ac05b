"""Subtraction modes through the whole DAG of a pair (in-process, tests/integration/modes_chain.py).

One simulated scene, written twice by the simulator: forward (blurrier science image) and
with ``blurrier="template"``. With equal skies and no transients the second is exactly
the first with the roles exchanged (tests/unit/test_synth_blurrier.py), so the forward
run is the reference of the convolveScience run on the same pixels. 512² px, 3000
stars/Mpx from 1000 ADU, sky 200 ADU in both images (gain 1, read noise 4 e-: per-pixel
noise variance 216 ADU², the template as noisy as the science image), a bad column, no
cosmic rays.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from tests.integration.chain import run_pair
from tests.integration.modes_chain import config_with, run_modes_pair
from tests.modes_sim import lag1, truth_spatial_kernel

from psfmatch import io, synth
from psfmatch.diagnostics import STATS_BAD_PLANES
from psfmatch.modes import difference_convolve_science
from psfmatch.preconvolution import significance

# No cosmic rays: ip_diffim clears the template's CR plane (preserveTemplateMask), so a
# template cosmic ray would sit unflagged in the difference and in the blank sky below.
BASE = {"seed": 7, "shape": (512, 512), "star_density": 3000.0, "flux_min": 1000.0,
        "sky_template": 200.0, "sky_science": 200.0, "n_transients": 0, "n_variables": 0,
        "n_cosmic_rays": 0}
NOISE_VAR = 200.0 + 4.0**2  # sky / gain + (read noise / gain)²
SWAP = {"template_fwhm": 4.5, "science_fwhm": 3.0, "blurrier": "template"}
pytestmark = pytest.mark.slow  # five runs of the DAG in-process, about 20 s in all


def _write(root: Path, name: str, params: synth.SimulationParams):
    pair = synth.make_pair(params)
    folder = root / name
    folder.mkdir(parents=True)
    t, s = folder / "template.fits", folder / "science.fits"
    io.write_exposure(t, pair.template.with_(psf=None))
    io.write_exposure(s, pair.science.with_(psf=None))
    return pair, t, s


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("modes")
    fwd, ft, fs = _write(root, "forward", synth.SimulationParams(**BASE))
    swp, st, ss = _write(root, "swapped", synth.SimulationParams(**BASE, **SWAP))
    (root / "old").mkdir()
    return {
        "forward": (fwd, run_modes_pair(root / "forward" / "run", ft, fs, config_with())),
        "swapped": (swp, run_modes_pair(root / "swapped" / "run", st, ss, config_with())),
        # today's behaviour on the swapped pair: the blurrier template convolved
        "swapped_ct": (swp, run_modes_pair(root / "swapped" / "ct", st, ss,
                                           config_with(subtract={"mode": "convolveTemplate"}))),
        # the chain without any mode (steps called as before the subtraction modes)
        "old": (fwd, run_pair(root / "old", ft, fs)),
        "paths": {"forward": (ft, fs), "root": root},
    }


def _stamp_rms(difference, table, half: int = 8) -> tuple[float, int]:
    """rms of D/σ over the unmasked pixels of (2 half + 1)² stamps at the GOOD candidates."""
    z = difference.image / np.sqrt(difference.variance)
    bad = (difference.mask & difference.plane_bitmask(STATS_BAD_PLANES)) != 0
    values = []
    for x, y in zip(table["x"][table["status"] == "GOOD"], table["y"][table["status"] == "GOOD"],
                    strict=True):
        c, r = round(x), round(y)
        box = (slice(r - half, r + half + 1), slice(c - half, c + half + 1))
        v = z[box][~bad[box]]
        values.append(v[np.isfinite(v)])
    v = np.concatenate(values)
    return float(np.sqrt(np.mean(v**2))), v.size


def _oracle(pair):
    """The raw difference made with the true kernel and background (same convention)."""
    kernel = truth_spatial_kernel(pair.truth)
    difference, _ = difference_convolve_science(pair.science, pair.template, kernel)
    return difference


def test_blurrier_template_auto_convolves_the_science_image_as_well_as_the_oracle(runs):
    pair, p = runs["swapped"]
    metrics = io.read_json(p["metrics.json"])
    assert metrics["mode"]["mode"] == "convolveScience"
    assert metrics["mode"]["reason"] == "shape test per axis"
    table = io.read_table(p["final.parquet"]).columns
    fitted, n = _stamp_rms(io.read_exposure(p["raw.fits"]), table)
    oracle, _ = _stamp_rms(_oracle(pair), table)
    # n ~ 2.6e4 stamp pixels: the rms itself is known to 1/sqrt(2n) ~ 0.5 %, and both share
    # the pixel noise; 1.05 (the acceptance limit) is far outside that
    assert n > 10_000
    assert fitted <= 1.05 * oracle
    # before: convolving the blurrier template (the AL "deconvolution" basis) fails that
    before_pair, before = runs["swapped_ct"]
    assert io.read_json(before["metrics.json"])["mode"]["mode"] == "convolveTemplate"
    ct_table = io.read_table(before["final.parquet"]).columns
    ct_fitted, _ = _stamp_rms(io.read_exposure(before["raw.fits"]), ct_table)
    ct_oracle, _ = _stamp_rms(_oracle(before_pair), ct_table)
    print(f"stamps rms / oracle: convolveScience {fitted / oracle:.4f}, "
          f"convolveTemplate {ct_fitted / ct_oracle:.4f}; kernel sums "
          f"{metrics['kernel_sum']:.4f}, {io.read_json(before['metrics.json'])['kernel_sum']:.4f} "
          f"(truth {pair.truth.photometric_scale} and its inverse)")
    assert ct_fitted > 1.05 * ct_oracle


def test_convolve_science_fits_the_forward_kernel_and_the_forward_difference(runs):
    """Same pixels, roles exchanged: the same kernel, and D = -D_forward / kernel sum."""
    (_, fwd), (pair, swp) = runs["forward"], runs["swapped"]
    k_fwd, k_swp = io.read_kernel(fwd["kernel.fits"]), io.read_kernel(swp["kernel.fits"])
    assert (k_fwd.metadata["maps"], k_swp.metadata["maps"]) == (
        "template->science", "science->template")
    # detection, stamps and fits run on the same images in the same fitting roles
    np.testing.assert_allclose(k_swp.coefficients, k_fwd.coefficients, rtol=1e-12, atol=0)
    np.testing.assert_allclose(k_swp.background_coefficients, k_fwd.background_coefficients,
                               rtol=1e-12, atol=1e-12)
    truth = pair.truth.kernel
    for x, y in ((255.5, 255.5), (40, 40), (471, 40), (40, 471), (471, 471)):
        half = (truth.kernel_size - k_swp.kernel_size) // 2
        true = truth.kernel_at(x, y)[half:-half or None, half:-half or None]
        l1 = [np.abs(k.image_at(x, y) - true).sum() / true.sum() for k in (k_fwd, k_swp)]
        assert l1[1] == pytest.approx(l1[0], rel=1e-9, abs=1e-12)
    assert k_swp.kernel_sum == pytest.approx(k_fwd.kernel_sum, rel=1e-12)
    d_fwd, d_swp = io.read_exposure(fwd["raw.fits"]), io.read_exposure(swp["raw.fits"])
    norm = io.read_exposure(swp["matched.fits"]).metadata["KSUMNORM"]
    half = k_fwd.kernel_size // 2
    inner = (slice(half, -half), slice(half, -half))
    ok = np.isfinite(d_fwd.image[inner]) & np.isfinite(d_swp.image[inner])
    # float32 images of values up to ~1e5 ADU: 1e-6 relative to the largest pixel
    scale = float(np.nanmax(np.abs(d_fwd.image[inner])))
    np.testing.assert_allclose(d_swp.image[inner][ok], -d_fwd.image[inner][ok] / norm,
                               rtol=0, atol=1e-6 * scale)
    np.testing.assert_allclose(d_swp.variance[inner][ok], d_fwd.variance[inner][ok] / norm**2,
                               rtol=1e-5)


def test_forward_products_are_unchanged_apart_from_decorrelation(runs):
    (_, new), (_, old) = runs["forward"], runs["old"]
    assert io.read_json(new["mode.json"])["mode"] == "convolveTemplate"
    k_new, k_old = io.read_kernel(new["kernel.fits"]), io.read_kernel(old["kernel.fits"])
    np.testing.assert_array_equal(k_new.coefficients, k_old.coefficients)
    np.testing.assert_array_equal(k_new.background_coefficients, k_old.background_coefficients)
    assert {k: v for k, v in k_new.metadata.items() if k not in ("maps", "convolved")} == \
        k_old.metadata
    for a, b in ((new["raw.fits"], old["difference.fits"]), (new["matched.fits"],
                                                             old["matched.fits"])):
        ea, eb = io.read_exposure(a), io.read_exposure(b)
        for plane in ("image", "mask", "variance"):
            np.testing.assert_array_equal(getattr(ea, plane), getattr(eb, plane))
    assert io.read_json(new["raw_metrics.json"]) == io.read_json(old["metrics.json"])
    # the final difference with decorrelation (and variance rescaling) off is today's
    ft, fs = runs["paths"]["forward"]
    off = config_with(subtract={"doDecorrelation": False, "doScaleVariance": False})
    again = run_modes_pair(new["kernel.fits"].parent, ft, fs, off, start="decorrelate")
    final, before = io.read_exposure(again["difference.fits"]), io.read_exposure(
        old["difference.fits"])
    for plane in ("image", "mask", "variance"):
        np.testing.assert_array_equal(getattr(final, plane), getattr(before, plane))
    metrics = io.read_json(again["metrics.json"])
    assert metrics["decorrelation"]["applied"] is False
    assert metrics["difference"]["clipped_std"] == \
        io.read_json(old["metrics.json"])["difference"]["clipped_std"]
    # and with it on (the default) only the final difference changes
    on = run_modes_pair(new["kernel.fits"].parent, ft, fs, config_with(), start="decorrelate")
    assert not np.array_equal(io.read_exposure(on["difference.fits"]).image, before.image)


def _blank_sky(pair, border: int) -> np.ndarray:
    """Pixels without source signal (< 1 % of the noise σ in both images) and unmasked.

    The noiseless signal comes from the expected-variance planes, V = (I + sky)/g + (r/g)²;
    the science image's differential background is not a source.
    """
    ny, nx = pair.science.shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    sigma = math.sqrt(NOISE_VAR)
    ok = np.ones((ny, nx), dtype=bool)
    for exp in (pair.template, pair.science):
        signal = exp.variance.astype(np.float64) - NOISE_VAR
        if exp.metadata["SIMROLE"] == ("science" if pair.truth.convolved == "template"
                                       else "template"):
            signal = signal - pair.truth.background_at(xx, yy)
        ok &= (np.abs(signal) < 0.01 * sigma) & (exp.mask == 0)
    ok[:border, :] = ok[-border:, :] = ok[:, :border] = ok[:, -border:] = False
    return ok


@pytest.mark.parametrize("name", ["forward", "swapped"])
def test_decorrelation_whitens_an_equally_noisy_pair_and_records_its_psf(runs, name):
    pair, p = runs[name]
    raw, final = io.read_exposure(p["raw.fits"]), io.read_exposure(p["difference.fits"])
    kernel = io.read_kernel(p["kernel.fits"])
    # beyond the kernel's and the filter's reach of the edge (filter 4x the kernel size)
    blank = _blank_sky(pair, border=2 * kernel.kernel_size) \
        & ((raw.mask & raw.plane_bitmask(STATS_BAD_PLANES)) == 0)  # e.g. the dilated bad column
    n = int(blank.sum())
    assert n > 50_000
    z_raw = raw.image / np.sqrt(raw.variance)
    z = final.image / np.sqrt(final.variance)
    before, after = lag1(z_raw, blank), lag1(z, blank)
    print(f"{name}: lag-1 (x, y) before {before}, after {after}; std(D/sigma) before "
          f"{np.std(z_raw[blank]):.4f}, after {np.std(z[blank]):.4f}; N = {n}")
    # before: the template noise convolved by the kernel correlates neighbours,
    # v_t sum K(d) K(d + 1) / (v + v_t sum K^2) ~ 0.04 for these widths and noises
    assert min(before) > 0.02
    # after: <= 0.01 in both directions (the acceptance limit; the estimate's own noise
    # is 1/sqrt(N) < 0.005)
    assert max(abs(a) for a in after) <= 0.01
    # std of D/sigma within 2 % of 1 (sampling error 1/sqrt(2N) < 0.3 %)
    assert float(np.std(z[blank])) == pytest.approx(1.0, abs=0.02)
    metrics = io.read_json(p["metrics.json"])
    info = metrics["decorrelation"]
    assert info["applied"] is True
    psf = io.read_psf_model(p["difference_psf.fits"]).image_at(0.0, 0.0)
    assert float(psf.sum()) == pytest.approx(1.0, abs=1e-9)
    np.testing.assert_allclose(final.psf.image, psf, rtol=1e-12, atol=1e-15)
    # the whitened PSF is sharper than the unconvolved image's (the filter boosts high
    # spatial frequencies), and its recorded FWHM is the one measured on it
    assert info["psf_fwhm_after"] < info["psf_fwhm_before"]
    unconvolved = "science" if name == "forward" else "template"
    assert info["psf_fwhm_before"] == pytest.approx(
        metrics["mode"]["fwhm"][unconvolved], rel=0.02)


def test_score_image_is_the_detection_snr(tmp_path):
    """Preconvolution: score / sqrt(variance) at injected point sources is their S/N.

    Point sources injected at pixel centres into the science image of a pair with a
    constant kernel (no width gradient), fluxes set for S/N 5-50. Expected S/N: the
    optimal (Fisher) one for a source of flux F against the difference's noise,
    ν = F sqrt(mean_k |P̂|² / (v + v_t |K̂|²)), P the science PSF and K the true kernel,
    evaluated with numpy FFTs independently of the pipeline.
    """
    params = synth.SimulationParams(**{**BASE, "seed": 11, "star_density": 2000.0,
                                       "kernel_width_gradient": 0.0})
    pair = synth.make_pair(params)
    n = 256
    psf = synth.gaussian_psf_image(params.science_fwhm, 31)
    kernel = pair.truth.kernel.kernel_at(255.5, 255.5)

    def padded(a):
        out = np.zeros((n, n))
        idx = (np.arange(a.shape[0]) - a.shape[0] // 2) % n
        out[np.ix_(idx, idx)] = a
        return out

    p_hat, k_hat = np.fft.fft2(padded(psf)), np.fft.fft2(padded(kernel))
    snr_per_flux = math.sqrt(np.mean(np.abs(p_hat) ** 2 / (NOISE_VAR + NOISE_VAR
                                                           * np.abs(k_hat) ** 2)))
    grid = np.arange(40, 480, 40)
    xx, yy = (a.ravel() for a in np.meshgrid(grid, grid))
    levels = np.random.default_rng(3).permutation(
        np.repeat([5.0, 10.0, 20.0, 35.0, 50.0], [41, 20, 20, 20, 20]))
    science = pair.science.image.astype(np.float64)
    synth.render_gaussians(science, xx, yy, levels / snr_per_flux,
                           params.science_fwhm / 2.3548200450309493)
    t, s = tmp_path / "template.fits", tmp_path / "science.fits"
    io.write_exposure(t, pair.template.with_(psf=None))
    io.write_exposure(s, pair.science.with_(image=science.astype(np.float32), psf=None))
    p = run_modes_pair(tmp_path / "run", t, s, config_with(difference={"preconvolution": True}))
    metrics = io.read_json(p["metrics.json"])
    assert metrics["mode"]["mode"] == "convolveTemplate"
    assert metrics["difference"]["image"] == "score"
    nu = significance(io.read_exposure(p["difference.fits"]))[yy, xx]
    for level in (5.0, 10.0, 20.0, 35.0, 50.0):
        ratio = float(np.mean(nu[levels == level]) / level)
        print(f"S/N {level:>4}: score / S/N = {ratio:.3f}")
        # within 10 % (the acceptance limit): the noise of the mean is 1/(level sqrt(n)),
        # 3 % at S/N 5 (41 sources), under 1 % above; the filter is the Gaussian of the
        # measured FWHM, not the exact PSF, which costs ~1 %
        assert ratio == pytest.approx(1.0, abs=0.10)
