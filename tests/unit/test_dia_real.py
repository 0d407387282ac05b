"""DIA detection on ZTF alert triplets (../shared/data/real; skipped when absent).

Each triplet is a 63×63 science / template / difference cut-out centred on the alert's
candidate. We make our own difference from the science and template stamps (one
Alard-Lupton kernel fitted over the stamp with the centre masked, so the alert cannot
be absorbed into the kernel) and require the alert to be detected within 1 px of the
stamp centre with the sign ZTF gave it (``isdiffpos``).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from astropy.io import fits
from tests.conftest import REAL_DATA
from tests.dia_support import stamp_difference

from psfmatch.dia import DiaOptions, detect_and_measure, gaussian_psf_image

TRIPLETS = REAL_DATA / "ztf_alert_triplets"
pytestmark = pytest.mark.realdata
if not TRIPLETS.is_dir():
    pytest.skip(f"real data folder {TRIPLETS} is absent", allow_module_level=True)

ALERTS = json.loads((TRIPLETS / "alerts_metadata.json").read_text())
CENTRE = 31.0  # 0-based centre pixel of a 63-px stamp


@pytest.mark.parametrize("alert", ALERTS, ids=[a["objectId"] for a in ALERTS])
def test_alert_detected_at_the_centre(alert):
    files = alert["files"]
    sci = fits.getdata(TRIPLETS / files["cutoutScience"]).astype(np.float64)
    tmpl = fits.getdata(TRIPLETS / files["cutoutTemplate"]).astype(np.float64)
    made = stamp_difference(sci, tmpl)
    # a 41-px difference holds the alert and at most a few residuals: no quality gate
    cat = detect_and_measure(made.difference, gaussian_psf_image(made.science_fwhm),
                             options=DiaOptions(max_detected_fraction=None))
    c = cat.columns
    d = np.hypot(c["x"] - CENTRE, c["y"] - CENTRE)
    assert len(cat) >= 1
    i = int(d.argmin())
    assert d[i] <= 1.0, (c["x"][i], c["y"][i])
    assert c["is_negative"][i] == (alert["candidate"]["isdiffpos"] == "f")
    assert abs(c["snr"][i]) >= 5.0
