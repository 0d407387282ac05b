"""The simulator's double-peaked (tracking-jump) truth kernel."""

from __future__ import annotations

import numpy as np
import pytest

from psfmatch import synth
from psfmatch.basis import SIGMA_TO_FWHM
from psfmatch.errors import ConfigError


def test_tracking_jump_kernel_has_two_peaks_the_right_sum_and_centroid():
    # narrow kernel (σ_K = 0.84 px) so that the two components are separate peaks
    params = synth.SimulationParams(shape=(128, 128), bad_column=None, science_fwhm=3.6,
                                    tracking_jump=(3.0, 2.0, 0.35), kernel_shift=(1.0, -1.0),
                                    kernel_width_gradient=0.0)
    kernel = synth.TruthKernel.from_params(params)
    image = kernel.kernel_at(64.0, 64.0)
    assert image.sum() == pytest.approx(params.photometric_scale, rel=1e-12)
    c = kernel.kernel_size // 2
    v, u = np.mgrid[-c : c + 1, -c : c + 1]
    # centroid = shift + fraction x jump
    assert (image * u).sum() / image.sum() == pytest.approx(1.0 + 0.35 * 3.0, abs=1e-6)
    assert (image * v).sum() / image.sum() == pytest.approx(-1.0 + 0.35 * 2.0, abs=1e-6)
    # exactly two local maxima, one within a pixel of each peak (1, -1) and (4, 1)
    from scipy.ndimage import maximum_filter

    maxima = np.argwhere((image == maximum_filter(image, size=3)) & (image > 1e-3))
    assert len(maxima) == 2
    found = sorted((int(col) - c, int(row) - c) for row, col in maxima)
    assert abs(found[0][0] - 1) <= 1
    assert abs(found[0][1] + 1) <= 1
    assert abs(found[1][0] - 4) <= 1
    assert abs(found[1][1] - 1) <= 1
    again = synth.TruthKernel.from_dict(kernel.to_dict())
    np.testing.assert_array_equal(again.kernel_at(10.0, 100.0), kernel.kernel_at(10.0, 100.0))
    # no jump: the Gaussian model is unchanged (and old truth files read as no jump)
    plain = synth.TruthKernel.from_params(synth.SimulationParams(shape=(128, 128), bad_column=None))
    legacy = plain.to_dict()
    del legacy["jump"]
    np.testing.assert_array_equal(synth.TruthKernel.from_dict(legacy).basis[0], plain.basis[0])


def test_science_psf_of_a_jump_is_wider_and_simulated_stars_follow_the_kernel():
    params = synth.SimulationParams(shape=(96, 96), tracking_jump=(4.0, 0.0, 0.5), seed=3,
                                    star_density=0.0, galaxy_density=0.0, n_transients=1,
                                    n_variables=0, n_cosmic_rays=0, add_noise=False,
                                    bad_column=None, background=(0.0, 0.0, 0.0))
    pair = synth.make_pair(params)
    plain = synth.SimulatedPsf(params.template_fwhm / SIGMA_TO_FWHM,
                               synth.TruthKernel.from_params(
                                   synth.SimulationParams(shape=(96, 96), bad_column=None)))
    assert pair.science.psf.fwhm > plain.fwhm
    # second moment along x grows by fraction (1 - fraction) jump² = 4 px²
    widened = (pair.science.psf.fwhm / SIGMA_TO_FWHM) ** 2
    assert widened - (plain.fwhm / SIGMA_TO_FWHM) ** 2 == pytest.approx(2.0, rel=1e-9)
    # the transient is rendered with both peaks: its flux centroid sits half-way (−2 px)
    transients = pair.truth.catalogues["transients"]
    tx, ty = transients["x"][0], transients["y"][0]
    img = pair.science.image
    yy, xx = np.mgrid[0 : img.shape[0], 0 : img.shape[1]]
    near = np.hypot(xx - tx + 2.0, yy - ty) < 15
    cx = (img * xx)[near].sum() / img[near].sum()
    assert cx == pytest.approx(tx - 2.0, abs=0.05)


def test_jump_fraction_is_validated():
    with pytest.raises(ConfigError, match="tracking_jump"):
        synth.SimulationParams(tracking_jump=(1.0, 0.0, 1.0))
