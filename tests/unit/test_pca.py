"""PCA spatial basis (docs/fitting.md#pca-basis; ip_diffim tests/test_kernelPca.py)."""

from __future__ import annotations

import numpy as np
import pytest

from psfmatch.pca import pca_basis


def _delta(k, value):
    img = np.zeros((k, k))
    img[k // 2, k // 2] = value
    return img


def _gaussian(k, sx, sy, dx=0.0):
    h = k // 2
    v, u = np.mgrid[-h : h + 1, -h : h + 1].astype(float)
    g = np.exp(-((u - dx) ** 2) / (2 * sx**2) - v**2 / (2 * sy**2))
    return g / g.sum()


def test_three_delta_kernels_give_eigenvalues_one_zero_zero():
    kernels = np.array([_delta(21, s) for s in (1.0, 2.0, 3.0)])
    plain = pca_basis(kernels, subtract_mean=False, n_components=5)
    np.testing.assert_allclose(plain.eigenvalues, [1.0, 0.0, 0.0], atol=5e-8)
    centred = pca_basis(kernels, subtract_mean=True, n_components=5)
    np.testing.assert_allclose(centred.eigenvalues, [0.0, 0.0, 0.0], atol=5e-8)
    # identical normalised kernels: the basis is the mean (the delta) alone
    assert centred.basis.shape == (1, 21, 21)
    np.testing.assert_allclose(centred.basis[0], _delta(21, 1.0), atol=1e-15)


def test_noisy_gaussian_kernels_mean_and_first_eigen_kernel():
    """100 Poisson realisations of a Gaussian (σ 2, 3) × 1e4 + 10 (test_kernelPca)."""
    rng = np.random.default_rng(2)
    truth = _gaussian(51, 2.0, 3.0)
    kernels = np.array([rng.poisson(truth * 1e4 + 10.0).astype(float) for _ in range(100)])
    plain = pca_basis(kernels, subtract_mean=False, n_components=5)
    centred = pca_basis(kernels, subtract_mean=True, n_components=5)
    assert plain.eigenvalues[0] > centred.eigenvalues[0]
    # with the mean subtracted the 100 images span at most 99 dimensions
    assert centred.eigenvalues[-1] == pytest.approx(0.0, abs=1e-7 * centred.eigenvalues[0])
    # the mean kernel (basis 0, unit sum) is within 20 % of the normalised reference where
    # the reference is well above the flat Poisson floor (10 counts of 1e4 + 10·51²)
    reference = (truth * 1e4 + 10.0) / (1e4 + 10.0 * 51**2)
    bright = truth > 0.2 * truth.max()
    np.testing.assert_allclose(centred.basis[0][bright], reference[bright], rtol=0.2)
    # the first eigen-image without mean subtraction is the reference scaled to peak 1
    first = plain.basis[0] / plain.basis[0].max()
    np.testing.assert_allclose(first[bright], (reference / reference.max())[bright], rtol=0.2)


def test_basis_is_renormalised_and_spans_a_two_component_family():
    """Kernels mixing two shapes are reproduced exactly by mean + one eigen-kernel."""
    a, b = _gaussian(15, 1.5, 1.5), _gaussian(15, 1.5, 1.5, dx=3.0)
    weights = np.linspace(0.1, 0.9, 12)
    kernels = np.array([(1 - w) * a + w * b for w in weights]) * 1.3
    pca = pca_basis(kernels, subtract_mean=True, n_components=3)
    basis = pca.basis
    assert basis.shape[0] == 3
    assert basis[0].sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(basis[1:].sum(axis=(1, 2)), 0.0, atol=1e-12)
    np.testing.assert_allclose((basis[1:] ** 2).sum(axis=(1, 2)), 1.0, atol=1e-12)
    flat = basis[:2].reshape(2, -1).T
    for kernel in kernels / 1.3:
        coef, *_ = np.linalg.lstsq(flat, kernel.ravel(), rcond=None)
        np.testing.assert_allclose(flat @ coef, kernel.ravel(), atol=1e-12)
        assert coef[0] == pytest.approx(1.0, abs=1e-12)  # kernel sum carried by basis 0
    assert pca.explained_fraction == pytest.approx(1.0, abs=1e-12)


def test_kernels_without_a_sum_are_skipped_and_no_kernel_raises():
    good = _gaussian(11, 1.0, 1.0)
    pca = pca_basis(np.array([good, np.zeros((11, 11)), good * 2]), subtract_mean=True,
                    n_components=5)
    assert pca.n_kernels == 2
    with pytest.raises(ValueError, match="finite, non-zero sum"):
        pca_basis(np.zeros((2, 11, 11)), subtract_mean=True, n_components=5)
