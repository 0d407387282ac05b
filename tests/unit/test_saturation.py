"""Saturation level estimated from an image without mask or keyword (saturation)."""

from __future__ import annotations

import numpy as np
import pytest

from psfmatch.saturation import estimate_saturation_level, saturation_mask
from psfmatch.synth.crowded import render_moffats


def _field(clip: float | None, seed: int = 3):
    rng = np.random.default_rng(seed)
    img = np.zeros((256, 256))
    n = 300
    flux = 10 ** rng.uniform(2.5, 6.5, n)
    render_moffats(img, rng.uniform(0, 255, n), rng.uniform(0, 255, n), flux, 4.0, 2.5)
    img += rng.normal(0.0, 5.0, img.shape)
    if clip is not None:
        img = np.minimum(img, clip)
    return img


def test_clipped_field_gives_the_clip_level():
    img = _field(20000.0)
    est = estimate_saturation_level(img)
    assert est.level == pytest.approx(20000.0)
    assert est.n_piled >= 3
    hit = saturation_mask(img, est.level, grow=2)
    assert hit[img >= 20000.0].all()
    # grown by 2 px: strictly more pixels than the clipped ones, but a small fraction
    assert (img >= 20000.0).sum() < hit.sum() < 0.05 * img.size


def test_unclipped_field_gives_no_level():
    est = estimate_saturation_level(_field(None))
    assert est.level is None
    assert est.n_piled < 3


def test_bad_pixels_and_flat_field_scatter():
    img = _field(20000.0)
    clipped = img >= 20000.0
    # a 1 % flat-field scatter on the clipped plateau: still one pile-up (tolerance 2 %)
    img[clipped] *= 1.0 + 0.01 * np.random.default_rng(4).uniform(-1, 1, clipped.sum())
    est = estimate_saturation_level(img)
    assert est.level is not None
    assert 19700.0 < est.level <= 20200.0
    # the clipped stars declared bad (with their steep edges): nothing left to pile up
    from scipy import ndimage

    edges = ndimage.binary_dilation(clipped, iterations=3)
    assert estimate_saturation_level(img, bad=edges).level is None


def _exposure(image, **metadata):
    from psfmatch.exposure import Exposure

    return Exposure(image=image, mask=np.zeros(image.shape, dtype=np.int32),
                    variance=np.full(image.shape, 25.0), metadata=metadata)


def test_ingest_flags_an_estimated_level_only_when_nothing_gives_one():
    from psfmatch.provenance import NOTE_CARDS
    from psfmatch.saturation import mark_estimated_saturation

    img = _field(20000.0)
    out = mark_estimated_saturation(_exposure(img), label="t")
    sat = out.plane("SAT")
    assert sat[img >= 20000.0].all()
    assert sat.sum() < 0.05 * img.size
    assert "20000" in out.metadata[NOTE_CARDS["saturation"]]
    np.testing.assert_array_equal(out.image, _exposure(img).image)  # image untouched
    np.testing.assert_array_equal(out.variance, _exposure(img).variance)
    # a header level, a level the reader applied, or SAT pixels already there: no estimate
    for known in (_exposure(img, SATURATE=25000.0),
                  _exposure(img, **{NOTE_CARDS["saturation"]: "0 pixels >= 25000"})):
        assert mark_estimated_saturation(known) is known
    flagged = out.with_(metadata={})
    assert mark_estimated_saturation(flagged) is flagged
    # an unclipped image is left alone
    plain = _exposure(_field(None))
    assert mark_estimated_saturation(plain) is plain


def test_ingest_step_estimates_saturation_unless_told_not_to(tmp_path):
    from psfmatch import io
    from psfmatch.steps.ingest import ingest

    path = io.write_exposure(tmp_path / "in.fits", _exposure(_field(20000.0)))
    ingest(inputs={"image": str(path)}, output_path=tmp_path / "a.fits", label="t")
    assert io.read_exposure(tmp_path / "a.fits").plane("SAT").any()
    ingest(inputs={"image": str(path)}, output_path=tmp_path / "b.fits", label="t",
           config={"kernel_fit": {"estimate_saturation": False}})
    out = io.read_exposure(tmp_path / "b.fits")
    assert "SAT" not in out.mask_planes or not out.plane("SAT").any()
