"""Step-layer behaviour that does not need images."""

from __future__ import annotations

import pytest

from psfmatch.config import PsfMatchConfig
from psfmatch.errors import InsufficientCandidatesError


@pytest.mark.parametrize(
    "block",
    [{"kernelBasisSet": "delta-function"}, {"usePcaForSpatialKernel": True},
     {"useBicForKernelBasis": True}, {"calculateKernelUncertainty": True}],
)
def test_options_once_refused_are_now_accepted(block):
    cfg = PsfMatchConfig.from_lsst(block)
    (lsst, value), = block.items()
    assert getattr(cfg, PsfMatchConfig.lsst_names()[lsst]) == value


def test_supported_subset_parses():
    cfg = PsfMatchConfig.from_lsst({"spatialKernelOrder": 1, "usePcaForSpatialKernel": None})
    assert cfg.spatial_kernel_order == 1
    assert cfg.use_pca_for_spatial_kernel is False  # the AL basis' own default
    df = PsfMatchConfig.from_lsst({"kernelBasisSet": "delta-function", "usePcaForSpatialKernel": None,
                  "maxConditionNumber": None})
    assert df.use_pca_for_spatial_kernel is True
    assert df.max_condition_number == 5.0e6


def test_insufficient_candidates_message_carries_counts_and_pickles():
    import pickle

    err = InsufficientCandidatesError("pair 'p': too few", {"detected": 4, "selected": 0})
    assert "detected=4, selected=0" in str(err)
    again = pickle.loads(pickle.dumps(err))
    assert str(again) == str(err)
    assert again.counts == {"detected": 4, "selected": 0}


def test_remap_mask_bits_between_plane_numberings():
    import numpy as np

    from psfmatch.exposure import remap_mask_bits

    mask = np.array([[1, 2, 3, 4]], dtype=np.int32)  # bits 0 (SAT), 1 (BAD), 2 (GONE)
    out = remap_mask_bits(mask, {"SAT": 0, "BAD": 1, "GONE": 2}, {"BAD": 5, "SAT": 3})
    np.testing.assert_array_equal(out, [[8, 32, 40, 0]])
    assert remap_mask_bits(mask, {"SAT": 0}, {"SAT": 0, "X": 1}) is mask


def test_bic_with_delta_functions_is_refused():
    from psfmatch.errors import ConfigError

    with pytest.raises(ConfigError, match="useBicForKernelBasis.*delta-function"):
        PsfMatchConfig.from_lsst({"kernelBasisSet": "delta-function", "useBicForKernelBasis": True})
