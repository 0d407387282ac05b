"""DIA sources recovered from simulated differences: completeness, photometry, astrometry.

Ten seeded 512² pairs with 40 transients and 20 variables each are subtracted with the
simulator's own kernel (``tests.dia_support``), so the difference is noise plus the
injected sources. The truth sources kept for the statistics are isolated (no other
injected source within 3 FWHM) and away from masked pixels; cosmic rays are off
because template cosmic rays are not masked in a difference (they appear as real
negative sources, see ``test_dia_noise``). Every source's *true S/N* is its true flux
over the error of a forced PSF fit at its true position, with the same noise model
(that error is what the pull test validates).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
from scipy import ndimage
from tests.dia_support import simulate

from psfmatch.basis import SIGMA_TO_FWHM
from psfmatch.dia import DiaOptions, detect_and_measure, forced_psf_flux

EXCLUDED = DiaOptions().exclude_planes
SEEDS = range(100, 110)
XY0 = (1000, 2000)
MATCH_RADIUS = 3.0  # px: 4 sigma of the per-axis centroid error at S/N 5 (0.54 px)


@dataclass
class Matched:
    """One row per clean truth source."""

    kind: np.ndarray
    true_flux: np.ndarray
    true_snr: np.ndarray
    found: np.ndarray
    flux: np.ndarray
    flux_err: np.ndarray
    dx: np.ndarray
    dy: np.ndarray
    negative: np.ndarray
    flags: np.ndarray
    dipole: np.ndarray
    sky_err_arcsec: np.ndarray


def _clean_truth(case, fwhm):
    cats = case.truth.catalogues
    t, v = cats["transients"], cats["variables"]
    x = np.concatenate([t["x"], v["x"]])
    y = np.concatenate([t["y"], v["y"]])
    flux = np.concatenate([t["flux_science"], v["flux_difference"]])
    kind = np.array(["transient"] * t["x"].size + ["variable"] * v["x"].size)
    dist = np.hypot(x[:, None] - x[None, :], y[:, None] - y[None, :])
    np.fill_diagonal(dist, np.inf)
    isolated = dist.min(axis=1) > 3.0 * fwhm
    d = case.difference
    bad = (d.mask & d.plane_bitmask(EXCLUDED)) != 0
    near_bad = ndimage.binary_dilation(bad, structure=np.ones((2 * int(2 * fwhm) + 1,) * 2, bool))
    col = np.rint(x - d.xy0[0]).astype(int)
    row = np.rint(y - d.xy0[1]).astype(int)
    keep = isolated & ~near_bad[row, col]
    return x[keep], y[keep], flux[keep], kind[keep]


@pytest.fixture(scope="module")
def recovery() -> tuple[Matched, list[dict]]:
    rows: dict[str, list] = {k: [] for k in Matched.__dataclass_fields__}
    metas = []
    for seed in SEEDS:
        case = simulate(seed=seed, n_transients=40, n_variables=20, n_cosmic_rays=0,
                        transient_flux_range=(300.0, 30000.0), xy0=XY0)
        sci = case.pair.science
        fwhm = sci.psf.fwhm
        stars = case.truth.catalogues["stars"]
        cat = detect_and_measure(case.difference, sci.psf, science=sci, template=case.matched,
                                 wcs=sci.wcs, gate_sources=(stars["x"], stars["y"]),
                                 label=f"seed {seed}")
        metas.append(cat.metadata)
        x, y, flux, kind = _clean_truth(case, fwhm)
        _, err = forced_psf_flux(case.difference, sci.psf, x, y, template=case.matched)
        c = cat.columns
        if len(cat):
            dist = np.hypot(c["x"][None, :] - x[:, None], c["y"][None, :] - y[:, None])
            j = dist.argmin(axis=1)
            found = dist[np.arange(x.size), j] < MATCH_RADIUS
        else:
            j, found = np.zeros(x.size, int), np.zeros(x.size, bool)
        ra_t, dec_t = sci.wcs.pixel_to_world_values(x - XY0[0], y - XY0[1])
        cosd = math.cos(math.radians(float(np.mean(dec_t))))
        sky = 3600.0 * np.hypot((c["ra"][j] - ra_t) * cosd, c["dec"][j] - dec_t) if len(cat) \
            else np.full(x.size, np.nan)

        def pick(name, fill, j=j, found=found, c=c):
            return np.where(found, c[name][j], fill) if c["x"].size else np.full(found.size, fill)

        for key, val in (("kind", kind), ("true_flux", flux), ("true_snr", np.abs(flux) / err),
                         ("found", found), ("flux", pick("psf_flux", np.nan)),
                         ("flux_err", pick("psf_flux_err", np.nan)),
                         ("dx", pick("x", np.nan) - x), ("dy", pick("y", np.nan) - y),
                         ("negative", pick("is_negative", False)), ("flags", pick("flags", 0)),
                         ("dipole", pick("is_dipole", False)),
                         ("sky_err_arcsec", np.where(found, sky, np.nan))):
            rows[key].append(np.asarray(val))
    return Matched(**{k: np.concatenate(v) for k, v in rows.items()}), metas


def test_gate_passes_and_noise_model(recovery):
    """Good subtractions pass the gate; the fitted noise scale is the same in every image."""
    _, metas = recovery
    for m in metas:
        assert m["footprint_ratio_mean"] < DiaOptions().max_footprint_ratio
        assert m["detected_fraction"] < DiaOptions().max_detected_fraction
    scales = np.array([m["noise_scale"] for m in metas])
    # same kernel and sky in every seed: c is a property of the noise, not the seed
    # (its robust-sigma estimate from ~3000 independent patches scatters by ~2-3 %)
    assert np.std(scales) / np.mean(scales) < 0.05


def test_completeness(recovery, record_property):
    """>= 95 % found at true S/N >= 10; the 5-sigma threshold shows in the curve."""
    m, _ = recovery
    edges = [3.0, 5.0, 7.0, 10.0, 15.0, 20.0, math.inf]
    curve = {}
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = (m.true_snr >= lo) & (m.true_snr < hi)
        curve[f"{lo:g}-{hi:g}"] = (int(sel.sum()), float(m.found[sel].mean()) if sel.any()
                                   else math.nan)
    record_property("completeness_curve", curve)
    print("completeness (n, fraction) by true S/N:", curve)
    bright = m.true_snr >= 10
    assert bright.sum() >= 200
    # a true S/N >= 10 source falls below 5 sigma with probability Phi(-5) ~ 3e-7
    assert m.found[bright].mean() >= 0.95, curve
    # at the threshold the detection probability is ~50 % (a little more: the peak is
    # the maximum over positions); below it most sources are lost
    assert curve["5-7"][1] >= 0.5, curve
    assert curve["3-5"][1] <= 0.5, curve


def test_flux_bias_and_pulls(recovery, record_property):
    """Median psf_flux / true within 2 %; pull std within 10 % of 1 (true S/N >= 10)."""
    m, _ = recovery
    sel = m.found & (m.true_snr >= 10) & ((m.flags & 0xFFFF) == 0) & ~m.dipole
    assert sel.sum() >= 200
    ratio = m.flux[sel] / m.true_flux[sel]
    pull = (m.flux[sel] - m.true_flux[sel]) / m.flux_err[sel]
    record_property("flux_ratio_median", float(np.median(ratio)))
    record_property("pull_std", float(np.std(pull)))
    print(f"n={sel.sum()} median ratio {np.median(ratio):.4f}, pull mean {np.mean(pull):.3f} "
          f"std {np.std(pull):.3f}")
    # statistical error of the median ratio ~1.25 * 5 % / sqrt(n) ~ 0.4 %
    assert abs(np.median(ratio) - 1.0) < 0.02
    # the std of n unit-normal pulls scatters by 1/sqrt(2n) ~ 4.5 % for n ~ 250
    assert abs(np.std(pull) - 1.0) < 0.10
    # the pulls are centred (mean within 3/sqrt(n))
    assert abs(np.mean(pull)) < 3.0 / math.sqrt(sel.sum())


def test_centroids(recovery, record_property):
    """Centroid rms <= 0.1 px at S/N > 20, and within 1.5x the Cramer-Rao bound."""
    m, _ = recovery
    sel = m.found & (m.true_snr > 20) & ((m.flags & 0xFFFF) == 0) & ~m.dipole
    assert sel.sum() >= 100
    rms = float(np.sqrt(np.mean(m.dx[sel] ** 2 + m.dy[sel] ** 2)))
    # Fisher information of a Gaussian PSF position: per-axis sigma = sqrt(2) s / (S/N),
    # s = FWHM / 2.355 (4.5 px science FWHM), so the radial rms is sqrt(2) times that
    s = 4.5 / SIGMA_TO_FWHM
    bound = float(np.sqrt(np.mean(2.0 * (math.sqrt(2.0) * s / m.true_snr[sel]) ** 2)))
    record_property("centroid_rms_px", rms)
    print(f"centroid rms {rms:.4f} px (Cramer-Rao expectation {bound:.4f} px, n={sel.sum()})")
    assert rms <= 0.1
    assert rms <= 1.5 * bound
    # ra/dec follow the parent positions through xy0 and the science WCS (0.2"/px)
    assert np.nanmax(m.sky_err_arcsec[sel]) < 0.2 * 0.5


def test_variable_signs(recovery):
    """Fading variables are negative, brightening ones positive, transients positive."""
    m, _ = recovery
    found = m.found & (m.true_snr >= 5)
    var = found & (m.kind == "variable")
    assert var.sum() >= 50
    assert (m.true_flux[var] < 0).sum() >= 15
    assert (m.true_flux[var] > 0).sum() >= 15
    # a sign flip at true S/N >= 5 would take a 10-sigma fluctuation
    np.testing.assert_array_equal(m.negative[var], m.true_flux[var] < 0)
    assert not m.negative[found & (m.kind == "transient")].any()
    assert not m.dipole[found].any()


def test_forced_fluxes_on_science_and_template():
    """science_flux / template_flux: unbiased, with errors that give unit pulls.

    No stars or galaxies here, so the forced fluxes measure the injected sources (and the
    science's differential background) alone:
    a transient is absent from the template (template_flux ~ 0 within its error, which
    carries the convolved template's correlated-noise factor c_T ~ 4), a variable has
    template_flux = scale * template flux.
    """
    pulls_t, ratios_s, ratios_t = [], [], []
    for seed in (200, 201, 202):
        case = simulate(seed=seed, n_transients=40, n_variables=20, n_cosmic_rays=0,
                        star_density=0.0, galaxy_density=0.0, bad_column=None,
                        transient_flux_range=(3000.0, 30000.0))
        sci, truth = case.pair.science, case.truth
        # without stars every science footprint is an injected source, which the
        # footprint power ratio (rightly) counts as residual: that gate is off here
        cat = detect_and_measure(case.difference, sci.psf, science=sci, template=case.matched,
                                 options=DiaOptions(max_footprint_ratio=None,
                                                    max_footprint_ratio_std=None))
        c = cat.columns
        assert cat.metadata["template_noise_scale"] > 2.0
        for name in ("transients", "variables"):
            t = truth.catalogues[name]
            dist = np.hypot(c["x"][None, :] - t["x"][:, None], c["y"][None, :] - t["y"][:, None])
            j = dist.argmin(axis=1)
            others = np.hypot(t["x"][:, None] - t["x"][None, :], t["y"][:, None] - t["y"][None, :])
            np.fill_diagonal(others, np.inf)
            ok = (dist[np.arange(j.size), j] < MATCH_RADIUS) & (others.min(axis=1) > 15.0)
            j = j[ok]
            # the science also holds the differential background b(x, y), which a PSF
            # fit without a sky term reads as b * sum(P) / sum(P^2) = b / sum(P^2)
            p2 = np.array([np.sum(sci.psf.image_at(xx, yy) ** 2)
                           for xx, yy in zip(t["x"][ok], t["y"][ok], strict=True)])
            sky = truth.background_at(t["x"][ok], t["y"][ok]) / p2
            ratios_s.append(c["science_flux"][j] / (t["flux_science"][ok] + sky))
            if name == "transients":
                pulls_t.append(c["template_flux"][j] / c["template_flux_err"][j])
            else:
                ratios_t.append(c["template_flux"][j]
                                / (truth.photometric_scale * t["flux_template"][ok]))
    pulls = np.concatenate(pulls_t)
    assert pulls.size >= 80
    print(f"template pulls n={pulls.size} mean {pulls.mean():.3f} std {pulls.std():.3f}")
    # std of n unit pulls scatters by 1/sqrt(2n) ~ 7 %; 20 % is a 3-sigma band
    assert abs(np.std(pulls) - 1.0) < 0.20
    assert abs(np.mean(pulls)) < 3.0 / math.sqrt(pulls.size)
    assert abs(np.median(np.concatenate(ratios_s)) - 1.0) < 0.02
    assert abs(np.median(np.concatenate(ratios_t)) - 1.0) < 0.03
