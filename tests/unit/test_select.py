"""Tests of kernel-candidate selection (:mod:`psfmatch.select`)."""

from __future__ import annotations

import numpy as np
import pytest

from psfmatch.detect import detect_candidates
from psfmatch.errors import PsfMatchError
from psfmatch.exposure import DEFAULT_MASK_PLANES, Exposure
from psfmatch.select import SelectionError, cell_grid, cut_stamps, select_candidates
from psfmatch.synth import SimulationParams, make_pair

BIT = {k: 1 << v for k, v in DEFAULT_MASK_PLANES.items()}
NEW_COLUMNS = ("stamp_x0", "stamp_y0", "stamp_x1", "stamp_y1", "status", "reason", "cell",
               "cell_x", "cell_y", "rank")


def _exposure(shape, xy0=(0, 0), seed=0):
    rng = np.random.default_rng(seed)
    return Exposure(image=rng.normal(0.0, 1.0, shape), mask=np.zeros(shape, np.int32),
                    variance=np.ones(shape), xy0=xy0)


def _cands(x, y, flux=None, snr=None, ids=None):
    x = np.asarray(x, dtype=float)
    n = x.size
    return {
        "id": np.arange(1, n + 1, dtype=np.int64) if ids is None else np.asarray(ids),
        "x": x, "y": np.asarray(y, dtype=float),
        "flux": np.full(n, 1000.0) if flux is None else np.asarray(flux, dtype=float),
        "snr": np.full(n, 50.0) if snr is None else np.asarray(snr, dtype=float),
        "extra": np.arange(n) * 10,
    }


@pytest.fixture
def pair_by_hand():
    # template parent bbox x 10..229, y 5..204; science x 0..239, y 0..189
    template = _exposure((200, 220), xy0=(10, 5), seed=1)
    science = _exposure((190, 240), xy0=(0, 0), seed=2)
    return template, science


def test_each_rejection_reason(pair_by_hand):
    template, science = pair_by_hand
    k = 10
    tmask = template.mask.copy()
    smask = science.mask.copy()
    # id 4: SAT in the template stamp (parent 100,60 -> template array [55, 90])
    tmask[60 - 5 + 7, 100 - 10 + 3] |= BIT["SAT"]
    # id 5: NO_DATA in the science stamp around parent (150, 60), on its last column
    smask[60, 150 + k] |= BIT["NO_DATA"]
    # id 6: SAT in template, NO_DATA and EDGE in science around (60, 150)
    tmask[150 - 5, 60 - 10] |= BIT["SAT"]
    smask[150 - k, 60 - k] |= BIT["EDGE"] | BIT["NO_DATA"]
    # id 7: BAD only (not a rejecting plane) around (200, 100), one pixel just outside
    #       the stamp has SAT
    smask[100, 200] |= BIT["BAD"]
    smask[100, 200 + k + 1] |= BIT["SAT"]
    template = template.with_(mask=tmask)
    science = science.with_(mask=smask)
    x = [60.0, 19.4, 100.0, 100.0, 150.0, 60.0, 200.0, 150.0, np.nan, 19.6]
    y = [60.0, 100.0, 179.6, 60.0, 60.0, 150.0, 100.0, 120.0, 50.0, 100.0]
    snr = [50.0, 50.0, 50.0, 50.0, 50.0, 50.0, 50.0, 9.99, 50.0, 10.0]
    out = select_candidates(_cands(x, y, snr=snr), template, science, kernel_size=k)
    assert out["reason"].tolist() == [
        "",
        "outside_template",          # stamp x0 = 19 - 10 = 9 < 10
        "outside_science",           # stamp y1 = 180 + 10 = 190 > 189 (inside template)
        "bad_mask:template:SAT",
        "bad_mask:science:NO_DATA",
        "bad_mask:template:SAT,science:NO_DATA,science:EDGE",
        "",
        "low_snr",
        "outside_template",          # non-finite position
        "",                          # x 19.6 rounds to 20: stamp x0 = 10, inside; snr == min
    ]
    assert out["status"].tolist() == ["OK" if r == "" else "REJECTED" for r in out["reason"]]
    np.testing.assert_array_equal(out["stamp_x1"] - out["stamp_x0"], 2 * k)
    np.testing.assert_array_equal(out["stamp_y1"] - out["stamp_y0"], 2 * k)
    assert out["stamp_x0"][1] == 9 and out["stamp_x0"][9] == 10
    assert out["stamp_y1"][2] == 190
    # rejected rows keep their columns and get rank -1
    np.testing.assert_array_equal(out["extra"], np.arange(10) * 10)
    assert np.all(out["rank"][out["status"] == "REJECTED"] == -1)
    # bad_mask_planes is configurable: with no planes only geometry and S/N remain
    out2 = select_candidates(_cands(x, y, snr=snr), template, science, kernel_size=k,
                             bad_mask_planes=())
    assert out2["reason"][3:6].tolist() == ["", "", ""]


def test_cap_keeps_highest_snr(pair_by_hand):
    template, science = pair_by_hand
    x = [50.0, 100.0, 150.0, 50.0, 100.0]
    y = [50.0, 50.0, 50.0, 120.0, 120.0]
    snr = [20.0, 80.0, 5.0, 80.0, 40.0]
    ids = [5, 4, 3, 2, 1]
    out = select_candidates(_cands(x, y, snr=snr, ids=ids), template, science,
                            kernel_size=10, max_candidates=2)
    # id 2 and id 4 tie at snr 80 and are kept; id 3 is low_snr before the cap
    assert out["reason"].tolist() == ["over_max_candidates", "", "low_snr", "",
                                      "over_max_candidates"]
    out = select_candidates(_cands(x, y, snr=snr, ids=ids), template, science,
                            kernel_size=10, max_candidates=-1)
    assert (out["status"] == "OK").sum() == 4
    with pytest.raises(SelectionError, match="max_candidates must be > 0 or -1, got 0"):
        select_candidates(_cands(x, y), template, science, kernel_size=10, max_candidates=0)


def test_cells_on_300_by_260_region():
    # region 300 x 260 from (50, 40): cells x [50..177], [178..305], [306..349];
    # y [40..167], [168..295], [296..299]
    template = _exposure((260, 300), xy0=(50, 40))
    science = _exposure((400, 400), xy0=(0, 0))
    grid = cell_grid((50, 40, 349, 299), 128, 128)
    assert grid.shape == (9, 4)
    np.testing.assert_array_equal(grid[0], [50, 40, 177, 167])
    np.testing.assert_array_equal(grid[1], [178, 40, 305, 167])
    np.testing.assert_array_equal(grid[2], [306, 40, 349, 167])
    np.testing.assert_array_equal(grid[8], [306, 296, 349, 299])
    x = [50 + 127.4, 50 + 127.6, 349.0, 349.4, 49.4, 200.0, 200.0]
    y = [100.0, 100.0, 299.0, 200.0, 100.0, 295.4, 295.5]
    out = select_candidates(_cands(x, y), template, science, kernel_size=5,
                            size_cell_x=128, size_cell_y=128)
    assert out["cell_x"].tolist() == [0, 1, 2, 2, -1, 1, 1]
    assert out["cell_y"].tolist() == [0, 0, 2, 1, -1, 1, 2]
    assert out["cell"].tolist() == [0, 1, 8, 5, -1, 4, 7]
    # every candidate's rounded centre lies inside its cell box
    inside = out["cell"] >= 0
    box = grid[out["cell"][inside]]
    xr = np.floor(np.asarray(x)[inside] + 0.5)
    yr = np.floor(np.asarray(y)[inside] + 0.5)
    assert np.all((box[:, 0] <= xr) & (xr <= box[:, 2]) & (box[:, 1] <= yr) & (yr <= box[:, 3]))
    # the region is the intersection of both bboxes
    science2 = _exposure((200, 300), xy0=(100, 100))  # x 100..399, y 100..299
    out2 = select_candidates(_cands([60.0, 120.0], [150.0, 150.0]), template, science2,
                             kernel_size=5)
    assert out2["cell"].tolist() == [-1, 0]
    assert out2["reason"].tolist() == ["outside_science", ""]


def test_cell_grid_edge_cases():
    assert cell_grid((0, 0, -1, 10), 10, 10).shape == (0, 4)
    np.testing.assert_array_equal(cell_grid((0, 0, 127, 255), 128, 128),
                                  [[0, 0, 127, 127], [0, 128, 127, 255]])
    with pytest.raises(SelectionError, match="size_cell_x=0"):
        cell_grid((0, 0, 10, 10), 0, 5)


def test_rank_within_cells(pair_by_hand):
    template, science = pair_by_hand
    # cells of 64 px from (10, 5): candidates 0..3 in cell (0, 0), 4..5 in cell (1, 0)
    x = [30.0, 40.0, 50.0, 55.0, 90.0, 100.0]
    y = [30.0, 40.0, 50.0, 30.0, 30.0, 40.0]
    flux = [100.0, 300.0, 200.0, 300.0, 50.0, 60.0]
    snr = [50.0, 50.0, 50.0, 5.0, 50.0, 50.0]
    ids = [10, 12, 11, 9, 13, 14]
    out = select_candidates(_cands(x, y, flux=flux, snr=snr, ids=ids), template, science,
                            kernel_size=5, size_cell_x=64, size_cell_y=64)
    assert out["cell"].tolist() == [0, 0, 0, 0, 1, 1]
    assert out["rank"].tolist() == [2, 0, 1, -1, 1, 0]
    # a flux tie is broken by id
    out = select_candidates(_cands(x[:3], y[:3], flux=[5.0, 5.0, 5.0], ids=[3, 1, 2]),
                            template, science, kernel_size=5, size_cell_x=64, size_cell_y=64)
    assert out["rank"].tolist() == [2, 0, 1]


def test_zero_candidates(pair_by_hand):
    template, science = pair_by_hand
    cands = {k: v[:0] for k, v in _cands([1.0], [1.0]).items()}
    out = select_candidates(cands, template, science, kernel_size=10)
    assert set(out) == set(cands) | set(NEW_COLUMNS)
    assert all(v.shape == (0,) for v in out.values())
    assert out["cell"].dtype == np.int64 and out["status"].dtype.kind == "U"


def test_bad_candidate_columns(pair_by_hand):
    template, science = pair_by_hand
    cands = _cands([50.0], [50.0])
    del cands["snr"]
    with pytest.raises(SelectionError, match=r"lack column\(s\) \['snr'\]"):
        select_candidates(cands, template, science, kernel_size=10)
    cands = _cands([50.0, 60.0], [50.0, 60.0])
    cands["flux"] = cands["flux"][:1]
    with pytest.raises(SelectionError, match="differ in length"):
        select_candidates(cands, template, science, kernel_size=10)
    with pytest.raises(SelectionError, match="kernel_size"):
        select_candidates(_cands([50.0], [50.0]), template, science, kernel_size=-1)
    assert issubclass(SelectionError, PsfMatchError) and issubclass(SelectionError, ValueError)


def test_cut_stamps_equals_slicing():
    exp = _exposure((60, 80), xy0=(100, 200), seed=3)
    exp = exp.with_(mask=np.arange(60 * 80, dtype=np.int32).reshape(60, 80),
                    variance=np.random.default_rng(4).uniform(1, 2, (60, 80)))
    x0 = np.array([100, 150, 170])
    y0 = np.array([200, 230, 249])
    image, variance, mask = cut_stamps(exp, x0, y0, x0 + 9, y0 + 10)
    assert image.shape == variance.shape == mask.shape == (3, 11, 10)
    for i in range(3):
        r, c = y0[i] - 200, x0[i] - 100
        np.testing.assert_array_equal(image[i], exp.image[r:r + 11, c:c + 10])
        np.testing.assert_array_equal(variance[i], exp.variance[r:r + 11, c:c + 10])
        np.testing.assert_array_equal(mask[i], exp.mask[r:r + 11, c:c + 10])
    with pytest.raises(ValueError, match="outside the exposure"):
        cut_stamps(exp, [171], [249], [180], [260])
    with pytest.raises(ValueError, match="equal size"):
        cut_stamps(exp, [100, 100], [200, 200], [109, 110], [209, 209])
    assert cut_stamps(exp, [], [], [], [])[0].shape[0] == 0


def test_on_simulated_detections():
    pair = make_pair(SimulationParams(shape=(256, 256), seed=11, star_density=4000.0))
    cands = detect_candidates(pair.template)
    out = select_candidates(cands, pair.template, pair.science, kernel_size=15,
                            size_cell_x=64, size_cell_y=64)
    n = cands["id"].size
    assert n > 0 and all(v.shape == (n,) for v in out.values())
    for name in cands:
        np.testing.assert_array_equal(out[name], cands[name])
    ok = out["status"] == "OK"
    assert ok.any()
    assert set(np.unique(out["cell"][ok])) <= set(range(16))
    # every OK stamp is clean in both images
    for exp in (pair.template, pair.science):
        _, _, masks = cut_stamps(exp, out["stamp_x0"][ok], out["stamp_y0"][ok],
                                 out["stamp_x1"][ok], out["stamp_y1"][ok])
        assert not np.any(masks & exp.plane_bitmask(("NO_DATA", "EDGE", "SAT")))
