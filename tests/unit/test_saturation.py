"""Saturation level estimated from an image without mask or keyword (saturation)."""

from __future__ import annotations

import numpy as np
import pytest

from psfmatch.saturation import estimate_saturation_level, saturation_mask
from psfmatch.synth_crowded import render_moffats


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
