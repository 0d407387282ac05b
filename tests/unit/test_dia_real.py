"""DIA detection on ZTF alert triplets (../shared/data/real; skipped when absent).

Each triplet is a 63×63 science / template / difference cut-out centred on the alert's
candidate. We make our own difference from the science and template stamps (one
Alard-Lupton kernel fitted over the stamp with the centre masked, so the alert cannot
be absorbed into the kernel) and require the alert to be detected within 1 px of the
stamp centre with the sign ZTF gave it (``isdiffpos``).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from astropy.io import fits
from tests.conftest import REAL_DATA

from psfmatch.basis import SIGMA_TO_FWHM, alard_lupton_basis, choose_alard_lupton
from psfmatch.dia import DiaOptions, detect_and_measure, gaussian_psf_image
from psfmatch.dia.filtering import robust_sigma
from psfmatch.exposure import Exposure
from psfmatch.fit import difference_stamp, fit_candidate

TRIPLETS = REAL_DATA / "ztf_alert_triplets"
pytestmark = pytest.mark.realdata
if not TRIPLETS.is_dir():
    pytest.skip(f"real data folder {TRIPLETS} is absent", allow_module_level=True)

ALERTS = json.loads((TRIPLETS / "alerts_metadata.json").read_text())
CENTRE = 31.0  # 0-based centre pixel of a 63-px stamp


def _variance(image: np.ndarray) -> np.ndarray:
    """Sky noise from the robust sigma, plus photon noise with gain = sky / sigma²."""
    sky = float(np.median(image))
    sigma = robust_sigma(image - sky)
    gain = sky / sigma**2 if sky > sigma**2 else math.inf
    return sigma**2 + np.clip(image - sky, 0.0, None) / gain


def _core_fwhm(image: np.ndarray) -> float:
    """FWHM of the brightest peak (away from the edges) from its 4 neighbours.

    For a Gaussian core, mean(neighbours) / peak = exp(-1 / (2 sigma²)).
    """
    im = image - np.median(image)
    inner = im[10:-10, 10:-10]
    r, c = (int(v) + 10 for v in np.unravel_index(np.argmax(inner), inner.shape))
    ratio = np.mean([im[r - 1, c], im[r + 1, c], im[r, c - 1], im[r, c + 1]]) / im[r, c]
    return SIGMA_TO_FWHM * math.sqrt(-0.5 / math.log(ratio))


@pytest.mark.parametrize("alert", ALERTS, ids=[a["objectId"] for a in ALERTS])
def test_alert_detected_at_the_centre(alert):
    files = alert["files"]
    sci = fits.getdata(TRIPLETS / files["cutoutScience"]).astype(np.float64)
    tmpl = fits.getdata(TRIPLETS / files["cutoutTemplate"]).astype(np.float64)
    var_s, var_t = _variance(sci), _variance(tmpl)
    fwhm_s, fwhm_t = _core_fwhm(sci), _core_fwhm(tmpl)
    choice = choose_alard_lupton(kernel_size=11, sigmas=(0.7, 1.5, 3.0), degrees=(4, 2, 2),
                                 target_fwhm=fwhm_t, reference_fwhm=fwhm_s,
                                 kernel_size_min=11, kernel_size_max=11)
    basis = alard_lupton_basis(half_width=choice.kernel_size // 2, sigmas=choice.sigmas,
                               degrees=choice.degrees)
    yy, xx = np.mgrid[0:63, 0:63]
    centre = np.hypot(xx - CENTRE, yy - CENTRE) < 2.0 * fwhm_s
    # the alert region gets (almost) no weight in the kernel fit
    fit_var = np.where(centre, 1e8 * (var_s + var_t), var_s + var_t)
    sol = fit_candidate(tmpl, sci, fit_var, basis, fit_background=True,
                        constant_variance_weighting=False)
    zero = np.zeros(sci.shape, np.int32)
    diff, var, mask = difference_stamp((tmpl, var_t, zero), (sci, var_s, zero), sol.kernel,
                                       sol.background)
    half = choice.kernel_size // 2
    # the valid region starts at stamp pixel (half, half): xy0 keeps stamp coordinates
    exp = Exposure(image=diff.astype(np.float32), mask=mask, variance=var.astype(np.float32),
                   xy0=(half, half))
    # a 41-px difference holds the alert and at most a few residuals: no quality gate
    cat = detect_and_measure(exp, gaussian_psf_image(fwhm_s),
                             options=DiaOptions(max_detected_fraction=None))
    c = cat.columns
    d = np.hypot(c["x"] - CENTRE, c["y"] - CENTRE)
    assert len(cat) >= 1
    i = int(d.argmin())
    assert d[i] <= 1.0, (c["x"][i], c["y"][i])
    assert c["is_negative"][i] == (alert["candidate"]["isdiffpos"] == "f")
    assert abs(c["snr"][i]) >= 5.0
