"""The kernel's own error at the centre and corners (kernel_accuracy) and in the mosaic."""

from __future__ import annotations

import numpy as np
import pytest

from psfmatch.kernel import SpatialKernel
from psfmatch.kernel_accuracy import accuracy_positions, kernel_accuracy
from psfmatch.qa.kernels import mosaic_plot
from psfmatch.spatial import SpatialFunction


def test_positions_are_the_centre_and_inset_corners():
    pos = accuracy_positions((0, 0, 2047, 1023))
    assert pos["centre"] == (1023.5, 511.5)
    assert pos["lower_left"] == (100.0, 100.0)
    assert pos["upper_right"] == (1947.0, 923.0)
    # a small bbox: corners 1/8 of the size in
    assert accuracy_positions((0, 0, 79, 79))["lower_right"] == (79 - 79 / 8, 79 / 8)


@pytest.fixture
def kernel():
    """Delta-function basis of 3² pixels, order 1, independent coefficient errors s²."""
    basis = np.eye(9).reshape(9, 3, 3)
    coefficients = np.zeros((9, 3))
    coefficients[4, 0] = 1.0  # a delta at the centre, sum 1 everywhere
    coefficients[[1, 3, 5, 7], 0] = 0.05
    function = SpatialFunction(1, "chebyshev1", (0, 0, 999, 999))
    s = 0.01
    return SpatialKernel(basis=basis, coefficients=coefficients, kernel_function=function,
                         covariance=s * s * np.eye(27)), s


def test_error_follows_from_the_covariance(kernel):
    kernel, s = kernel
    acc = kernel_accuracy(kernel, inverse_variance_weights=True)
    assert acc["covariance"] == "describes the error"
    for p in acc["positions"].values():
        terms = kernel.kernel_function.terms(p["x"], p["y"])
        # each pixel is one coefficient per spatial term: Var = s² Σ_t f_t², the sum adds 9
        pixel_sigma = s * np.sqrt(np.sum(terms**2))
        assert p["pixel_sigma_max"] == pytest.approx(pixel_sigma)
        assert p["kernel_sum_sigma"] == pytest.approx(3.0 * pixel_sigma)
        # E|e| = σ √(2/π) per pixel, over Σ|K| = 1.2
        assert p["expected_l1"] == pytest.approx(np.sqrt(2 / np.pi) * 9 * pixel_sigma / 1.2)
        assert p["kernel_sum"] == pytest.approx(1.2)
    # corners are farther from the centre of the Chebyshev terms: larger errors
    assert (acc["positions"]["upper_right"]["kernel_sum_sigma"]
            > acc["positions"]["centre"]["kernel_sum_sigma"])


def test_honest_labels(kernel):
    kernel, _ = kernel
    assert kernel_accuracy(kernel, inverse_variance_weights=False)["covariance"] == "lower bound"
    regularized = kernel_accuracy(kernel, inverse_variance_weights=True, regularized=True)
    assert regularized["covariance"] == "lower bound"
    assert "bias" in regularized["note"]
    assert "PCA" in kernel_accuracy(kernel, inverse_variance_weights=True,
                                    pca_basis=True)["note"]
    corrected = kernel_accuracy(kernel, inverse_variance_weights=False, noise_corrected=True)
    assert corrected["covariance"] == "approximate"
    assert "variance under their model" in corrected["note"]
    # with a penalty the bias still makes it a lower bound
    assert kernel_accuracy(kernel, inverse_variance_weights=False, noise_corrected=True,
                           regularized=True)["covariance"] == "lower bound"


def test_mosaic_states_the_error(kernel):
    kernel, _ = kernel
    kernel.metadata["accuracy"] = kernel_accuracy(kernel, inverse_variance_weights=False)
    plot = mosaic_plot(kernel, n=3)
    assert plot.data["accuracy"] is kernel.metadata["accuracy"]
    text = plot.figure.get_supxlabel()
    for words in ("lower bound", "upper right", "L1≈"):
        assert words in text


def test_stars_left_out_are_reported(kernel):
    """GOOD candidates beyond nStarPerCell and detections beyond max_candidates are
    counted, and the note and the mosaic say how to use them; none left out, no line."""
    kernel, _ = kernel
    acc = kernel_accuracy(kernel, inverse_variance_weights=False,
                          unused={"good_not_active": 77, "over_max_candidates": 4372})
    assert acc["unused"] == {"good_not_active": 77, "over_max_candidates": 4372}
    assert "77 GOOD candidates beyond nStarPerCell" in acc["note"]
    assert "nStarPerCell: -1" in acc["note"]
    kernel.metadata["accuracy"] = acc
    assert "4372 detections beyond detection.max_candidates" in acc["note"]
    assert "4372 detections beyond" in mosaic_plot(kernel, n=3).figure.get_supxlabel()
    only_cells = kernel_accuracy(kernel, inverse_variance_weights=False,
                                 unused={"good_not_active": 5, "over_max_candidates": 0})
    assert "max_candidates" not in only_cells["note"]
    none = kernel_accuracy(kernel, inverse_variance_weights=False,
                           unused={"good_not_active": 0, "over_max_candidates": 0})
    assert "not fitted" not in none["note"]
    kernel.metadata["accuracy"] = none
    assert "not fitted" not in mosaic_plot(kernel, n=3).figure.get_supxlabel()
