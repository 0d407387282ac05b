"""AL/DF bases (docs/basis.md) against ip_diffim's own expectations.

The expectations are those of ip_diffim's tests/test_basisLists.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from psfmatch.basis import (
    SIGMA_TO_FWHM,
    alard_lupton_basis,
    choose_alard_lupton,
    delta_function_basis,
    polynomial_terms,
    renormalize_basis,
)
from psfmatch.config import PsfMatchConfig

#: ip_diffim's PsfMatchConfigAL defaults (kernelSize 21, sigmas 0.7/1.5/3.0, degrees 4/2/2).
DEFAULTS = PsfMatchConfig()


def test_polynomial_term_order_is_afw_order():
    assert polynomial_terms(2) == [(0, 0), (1, 0), (0, 1), (2, 0), (1, 1), (0, 2)]
    assert len(polynomial_terms(4)) == 15


def test_default_al_basis_has_27_renormalised_kernels():
    basis = alard_lupton_basis(half_width=10, sigmas=(0.7, 1.5, 3.0), degrees=(4, 2, 2))
    assert basis.shape == (27, 21, 21)
    # ip_diffim checks to 7 places: element 0 sums to 1, others sum to 0 with unit L2 norm.
    assert basis[0].sum() == pytest.approx(1.0, abs=5e-8)
    np.testing.assert_allclose(basis[1:].sum(axis=(1, 2)), 0.0, atol=5e-8)
    np.testing.assert_allclose((basis[1:] ** 2).sum(axis=(1, 2)), 1.0, atol=5e-8)


def test_renormalize_three_analytic_gaussians():
    y, x = np.mgrid[-10:11, -10:11].astype(float)
    gaussians = np.array(
        [np.exp(-(x**2) / (2 * sx**2) - y**2 / (2 * sy**2)) for sx, sy in [(2, 2), (3, 4), (0.2, 0.25)]]
    )
    assert not np.any(np.isclose(gaussians.sum(axis=(1, 2)), 1.0))
    out = renormalize_basis(gaussians)
    np.testing.assert_allclose(out.sum(axis=(1, 2)), [1, 0, 0], atol=5e-8)
    np.testing.assert_allclose((out[1:] ** 2).sum(axis=(1, 2)), 1.0, atol=5e-8)


@pytest.mark.parametrize(
    ("target", "reference", "mode", "sigmas", "size"),
    [
        # ip_diffim's worked examples of the sizing rule, docs/basis.md#alard-lupton-sizing
        # (FWHM in pixels, or sigma × SIGMA_TO_FWHM)
        (3.0, 4.0, "convolution", (0.7, 1.4, 2.8), 21),
        (4.0, 3.0, "deconvolution", (0.5618, 1.1235, 2.2471), 21),
        (5.0, 5.0, "config", (0.7, 1.5, 3.0), 21),
        (2.0 * SIGMA_TO_FWHM, 2.8 * SIGMA_TO_FWHM, "convolution", (0.9798, 1.9596, 3.9192), 23),
        (2.0 * SIGMA_TO_FWHM, 3.0 * SIGMA_TO_FWHM, "convolution", (1.1180, 2.2361, 4.4721), 27),
        (2.0 * SIGMA_TO_FWHM, 4.0 * SIGMA_TO_FWHM, "convolution", (1.7321, 3.4641, 6.9282), 35),
        (2.4 * SIGMA_TO_FWHM, 2.0 * SIGMA_TO_FWHM, "deconvolution", (0.6633, 1.3266, 2.6533), 21),
    ],
)
def test_al_sizing_rule_matches_reference_examples(target, reference, mode, sigmas, size):
    choice = choose_alard_lupton(DEFAULTS, target_fwhm=target, reference_fwhm=reference)
    assert choice.mode == mode
    np.testing.assert_allclose(choice.sigmas, sigmas, atol=1e-4)
    assert choice.kernel_size == size
    assert choice.degrees == (4, 2, 2)


def test_al_sizing_without_fwhm_uses_config():
    choice = choose_alard_lupton(DEFAULTS)
    assert (choice.mode, choice.kernel_size, choice.sigmas) == ("config", 21, (0.7, 1.5, 3.0))
    with pytest.raises(ValueError, match="kernelSize must be odd, got 22"):
        PsfMatchConfig.from_lsst({"kernelSize": 22})


def test_delta_function_basis():
    basis = delta_function_basis(21)
    assert basis.shape == (441, 21, 21)
    n = 5 * 21 + 7  # row 5, col 7
    assert basis[n, 5, 7] == 1.0
    assert basis[n].sum() == 1.0
    np.testing.assert_array_equal(basis.sum(axis=(1, 2)), 1.0)
