"""QA plots show the numbers they are given; failure records and the run summary."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from matplotlib.collections import PathCollection
from matplotlib.colors import to_rgba

from psfmatch import io
from psfmatch.errors import InsufficientCandidatesError
from psfmatch.kernel import SpatialKernel
from psfmatch.logs import log_to_file, read_failure
from psfmatch.qa._common import UNUSED_COLOUR, USED_COLOUR
from psfmatch.qa.images import candidates_plot, images_plot
from psfmatch.qa.kernels import basis_plot, kernel_sum_plot, mosaic_plot, spatial_model_plot
from psfmatch.qa.residuals import residual_histogram_plot, worst_stamps_plot
from psfmatch.spatial import SpatialFunction
from psfmatch.steps.summary import QA_SUMMARY_COLUMNS, pair_outcome, qa_summary

RED = to_rgba("red")


def _markers_of_colour(ax, colour) -> int:
    """Scatter points drawn in ``colour`` (face or edge) on ``ax``."""
    n = 0
    for coll in ax.collections:
        if not isinstance(coll, PathCollection):
            continue
        colours = [tuple(c) for c in (*coll.get_facecolor(), *coll.get_edgecolor())]
        if any(np.allclose(c, colour) for c in colours):
            n += len(coll.get_offsets())
    return n


@pytest.fixture
def table():
    """Twelve candidates: GOOD (used or not) and BAD at each rejection stage."""
    rng = np.random.default_rng(11)
    status = np.array(["GOOD"] * 5 + ["BAD"] * 7, dtype=object)
    stage = np.array([""] * 5 + ["select", "select", "single", "ksum", "ksum", "ksum", "spatial"],
                     dtype=object)
    reason = np.array([""] * 5 + ["outside_template", "bad_mask:template:SAT",
                                  "residual rms = 2.1 > 1.5", "|ksum - 1.1| = 0.5 > 3 x 0.1",
                                  "|ksum - 1.1| = 0.6 > 3 x 0.1", "|ksum - 1.1| = 0.7 > 3 x 0.1",
                                  "residual mean = 0.4 > 0.25"], dtype=object)
    used = np.array([True, True, True, False, False] + [False] * 7)
    return {"x": rng.uniform(0, 199, 12), "y": rng.uniform(0, 149, 12), "status": status,
            "stage": stage, "reason": reason, "used": used}


def test_candidates_plot_has_one_red_marker_per_rejected_candidate(table):
    image = np.random.default_rng(1).normal(size=(150, 200))
    plot = candidates_plot(image, **table, region=(0, 0, 199, 149), size_cell_x=64,
                              size_cell_y=64)
    ax = plot.figure.axes[0]
    bad = table["status"] == "BAD"
    assert _markers_of_colour(ax, RED) == bad.sum() == 7
    assert _markers_of_colour(ax, to_rgba(USED_COLOUR)) == 3
    assert _markers_of_colour(ax, to_rgba(UNUSED_COLOUR)) == 2
    assert {k: len(v) for k, v in plot.data["rejected"].items()} == {
        "select": 2, "single": 1, "ksum": 3, "spatial": 1}
    rows = bad & (table["stage"] == "ksum")
    np.testing.assert_array_equal(plot.data["rejected"]["ksum"],
                                  np.column_stack([table["x"][rows], table["y"][rows]]))
    # numbers are stripped from clip reasons, so the three ksum rejections share one key
    assert plot.data["reasons"]["ksum"] == {"|ksum - 1.1|": 3}
    # 200 px / 64 -> 4 cells (the last one 8 px wide), edges at -0.5 + 64 i and 199.5
    assert plot.data["cell_edges_x"] == [-0.5, 63.5, 127.5, 191.5, 199.5]
    assert plot.data["cell_edges_y"] == [-0.5, 63.5, 127.5, 149.5]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(t.startswith("rejected: ksum (3)") for t in legend)


def test_images_share_one_contrast_around_their_own_medians():
    rng = np.random.default_rng(2)
    science = rng.normal(100.0, 5.0, (64, 64))
    template = rng.normal(400.0, 5.0, (64, 64))  # another sky level
    difference = rng.normal(0.0, 7.0, (64, 64))
    plot = images_plot(science, template, difference)
    widths = [high - low for low, high in plot.data["limits"]]
    np.testing.assert_allclose(widths, plot.data["width"])
    for (low, high), image in zip(plot.data["limits"], (science, template, difference),
                                  strict=True):
        assert low < np.median(image) < high
    assert len(plot.figure.axes) == 3


def test_kernel_sum_plot_limits_are_the_last_pass_of_each_iteration():
    sums = np.array([1.0, 1.02, 0.98, 1.01, 1.6, np.nan, 0.99])
    stage = np.array(["", "", "", "", "ksum", "select", ""], dtype=object)
    passes = {0: [{"mean": 1.1, "std": 0.2, "limit": 0.6}, {"mean": 1.0, "std": 0.015,
                                                           "limit": 0.045}],
              1: [{"mean": 1.0, "std": 0.015, "limit": 0.045}]}
    plot = kernel_sum_plot(sums, stage=stage, passes=passes, final_sum=1.001)
    assert plot.data["limits"] == {0: (1.0, 0.955, 1.045), 1: (1.0, 0.955, 1.045)}
    np.testing.assert_array_equal(plot.data["rejected_values"], [1.6])
    assert plot.data["values"].size == 6  # the NaN (no single-kernel fit) is not plotted


def test_residual_histogram_counts_every_value():
    z = np.random.default_rng(3).normal(size=20000)
    z[:5] = 50.0  # beyond the plotted range, still in the statistics
    plot = residual_histogram_plot(z, clipped=(0.0, 1.0))
    data = plot.data
    assert data["counts"].sum() + data["outside"] == data["n"] == z.size
    assert data["outside"] == 5
    assert data["mean"] == pytest.approx(z.mean())
    assert data["std"] == pytest.approx(z.std())


@pytest.fixture
def kernel():
    """A 3-basis order-1 kernel with a sum that varies over x and a sloped background."""
    k = 7
    basis = np.zeros((3, k, k))
    basis[0, 3, 3] = 1.0
    basis[1, 3, 4], basis[1, 3, 2] = 0.5, -0.5
    basis[2, 2, 3] = 1.0
    bbox = (0, 0, 99, 199)
    return SpatialKernel(
        basis=basis,
        coefficients=np.array([[1.0, 0.0, 0.0], [0.1, 0.3, 0.0], [0.0, 0.05, 0.02]]),
        kernel_function=SpatialFunction(1, "chebyshev1", bbox),
        background_coefficients=np.array([2.0, 0.5, -0.5]),
        background_function=SpatialFunction(1, "chebyshev1", bbox),
    )


def test_mosaic_shows_the_kernel_at_each_grid_position(kernel):
    plot = mosaic_plot(kernel, n=5)
    data = plot.data
    np.testing.assert_allclose(data["x"], np.linspace(0, 99, 5))
    np.testing.assert_allclose(data["y"], np.linspace(0, 199, 5))
    for iy, y in enumerate(data["y"]):
        for ix, x in enumerate(data["x"]):
            assert data["sums"][iy, ix] == pytest.approx(kernel.sum_at(x, y))
    # laid out as on the sky: the first panel (top left) is the largest y, smallest x
    first = plot.figure.axes[0].get_images()[0].get_array()
    np.testing.assert_allclose(first, kernel.image_at(data["x"][0], data["y"][-1]))


def test_spatial_model_maps_are_the_coefficients_and_background(kernel):
    plot = spatial_model_plot(kernel, n=9)
    data = plot.data
    gx, gy = np.meshgrid(data["x"], data["y"])
    for iy in (0, 4, 8):
        for ix in (0, 8):
            np.testing.assert_allclose(data["coefficients"][:, iy, ix],
                                       kernel.coefficients_at(gx[iy, ix], gy[iy, ix]))
    np.testing.assert_allclose(data["background"], kernel.background_at(gx, gy))
    assert sum(1 for ax in plot.figure.axes if ax.get_images()) == 4  # 3 maps + background


def test_basis_and_worst_stamps_panels(kernel):
    plot = basis_plot(kernel.basis, n_max=2)
    assert (plot.data["n_shown"], plot.data["n_basis"]) == (2, 3)
    assert plot.data["sums"] == pytest.approx([1.0, 0.0])
    stamps = [np.ones((5, 5))] * 2
    worst = worst_stamps_plot(ids=np.array([7, 3]), scores=np.array([3.0, 2.0]),
                                 score_name="rms", models=stamps, sciences=stamps,
                                 residuals=stamps, labels=["GOOD", "BAD (ksum)"])
    assert list(worst.data["ids"]) == [7, 3]
    assert sum(1 for ax in worst.figure.axes if ax.get_images()) == 6
    empty = worst_stamps_plot(ids=np.zeros(0), scores=np.zeros(0), score_name="rms",
                                 models=[], sciences=[], residuals=[])
    assert empty.data["ids"].size == 0


def test_write_figure_writes_a_png_atomically(tmp_path, kernel):
    path = io.write_figure(tmp_path / "basis.png", basis_plot(kernel.basis).figure)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["basis.png"]


# ---------------------------------------------------------------------- failures, summary
def _failing_step(log, message="pair 'p': no kernel candidates detected"):
    with pytest.raises(InsufficientCandidatesError), log_to_file(log):
        raise InsufficientCandidatesError(message, {"detected": 0})


def test_read_failure_returns_the_last_exception_line(tmp_path):
    _failing_step(tmp_path / "detect.log")
    assert read_failure(tmp_path / "detect.log") == (
        "psfmatch.errors.InsufficientCandidatesError: pair 'p': no kernel candidates "
        "detected (candidates per stage: detected=0)")
    with log_to_file(tmp_path / "ok.log") as log:
        log.info("fine")
    assert read_failure(tmp_path / "ok.log") is None
    assert read_failure(tmp_path / "absent.log") is None


def test_read_failure_of_a_chained_exception_is_the_last_one(tmp_path):
    log = tmp_path / "chain.log"

    def chained():
        try:
            raise KeyError("inner")
        except KeyError as err:
            raise RuntimeError("outer") from err

    with pytest.raises(RuntimeError), log_to_file(log):
        chained()
    assert read_failure(log) == "RuntimeError: outer"


def test_pair_outcome_ok_failed_incomplete(tmp_path):
    plots = [str(tmp_path / "a.png"), str(tmp_path / "b.png")]
    (tmp_path / "a.png").write_bytes(b"x")
    metrics = {"kernel_sum": 1.1, "spatial_condition_number": 1e8, "verdict": "well constrained",
               "candidates": {"total": 50, "used_in_final_fit": 30, "good": 35, "bad": 15},
               "difference": {"mean": 0.01, "std": 1.2, "clipped_mean": 0.0, "clipped_std": 0.99}}
    io.write_json(tmp_path / "metrics.json", metrics)
    ok = pair_outcome(pair="good", metrics_path=str(tmp_path / "metrics.json"),
                            plot_paths=plots, logs={})
    assert (ok["status"], ok["plots"]) == ("ok", "1/2")
    assert (ok["kernel_sum"], ok["n_used"], ok["n_rejected"], ok["residual_clipped_std"]) == (
        1.1, 30, 15, 0.99)

    old, new = tmp_path / "fit.log", tmp_path / "detect.log"
    _failing_step(old, "stale")
    _failing_step(new, "pair 'bad': current")
    os.utime(old, (1e9, 1e9))  # an earlier run's log
    failed = pair_outcome(pair="bad", metrics_path=str(tmp_path / "none.json"),
                                plot_paths=plots, logs={str(old): "fit_single_kernels",
                                                        str(new): "detect"})
    assert (failed["status"], failed["failed_step"]) == ("failed", "detect")
    assert "InsufficientCandidatesError: pair 'bad': current" in failed["error"]
    assert failed["kernel_sum"] is None

    incomplete = pair_outcome(pair="new", metrics_path=str(tmp_path / "none.json"),
                                    plot_paths=plots, logs={})
    assert incomplete["status"] == "incomplete"


def test_qa_summary_writes_table_and_escaped_html(tmp_path):
    rows = [
        {"pair": "good", "status": "ok", "kernel_sum": 1.1, "n_used": 30, "plots": "8/8"},
        {"pair": "empty", "status": "failed", "failed_step": "detect",
         "error": "Error: <no candidates> & more", "plots": "0/8"},
    ]
    qa_summary(rows=rows, table_path=str(tmp_path / "s.parquet"),
                     html_path=str(tmp_path / "s.html"))
    table = io.read_table(tmp_path / "s.parquet")
    assert list(table.columns) == list(QA_SUMMARY_COLUMNS)
    assert list(table.columns["status"]) == ["ok", "failed"]
    assert list(table.columns["n_used"]) == [30, -1]
    assert np.isnan(table.columns["kernel_sum"][1])
    assert table.metadata["counts"] == {"ok": 1, "failed": 1, "incomplete": 0}
    html = (tmp_path / "s.html").read_text()
    assert "Error: &lt;no candidates&gt; &amp; more" in html
    assert html.count('<tr class="notok">') == 1
    json.dumps(table.metadata)  # plain JSON metadata
