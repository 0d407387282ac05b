"""QA of a pair: ip_diffim's ds9 debug displays as PNG figures, and the run summary.

ip_diffim's only QA is a set of debug displays (``displayCandidates``,
``showBadCandidates``, ``displayKernelBasis``, ``displayKernelMosaic``,
``plotKernelSpatialModel``, ``displaySpatialCells``, ``displayTemplate``,
``displaySciIm``, ``displayDiffIm``). Each plotting function draws one of them from
arrays and tables (never from paths; :func:`psfmatch.steps.report.qa` reads the
products) and returns a :class:`~psfmatch.qa._common.QaPlot`: the figure and the numbers
it shows, so that a test can check a plot against the product it was drawn from.
Figures are :class:`matplotlib.figure.Figure` objects made without ``pyplot``;
:func:`psfmatch.io.write_figure` renders them with Agg. Images use a zscale interval
with an asinh stretch.

=====================  ========================================================
module                 figures
=====================  ========================================================
:mod:`.images`         ``images``, ``candidates``
:mod:`.kernels`        ``kernel_basis``, ``kernel_mosaic``, ``spatial_model``,
                       ``kernel_sum``
:mod:`.residuals`      ``residual_histogram``, ``worst_stamps``
:mod:`.dia`            ``dia_detections``, ``dia_cutouts``
:mod:`.summary`        the run summary as HTML
=====================  ========================================================

This module holds only :data:`QA_PLOTS`, the one table of a pair's QA plots, so that the
workflow can read it at parse time without importing matplotlib.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["QA_PLOTS", "QaPlotSpec", "qa_plot_keys"]


class QaPlotSpec(NamedTuple):
    """One QA plot: what it shows, where the report files it, and which rule draws it.

    The report caption is ``workflow/report/qa_<key>.rst``; the PNG is
    ``results/<pair>/qa/<key>.png``.
    """

    description: str
    subcategory: str
    label: str
    rule: str = "qa"


#: The QA plots of a pair, in the report's order: key -> :class:`QaPlotSpec`.
QA_PLOTS: dict[str, QaPlotSpec] = {
    "images": QaPlotSpec("science, warped template and difference with the same stretch",
                         "1 images", "science, template, difference"),
    "candidates": QaPlotSpec("candidates over the science image with the spatial cells",
                             "1 images", "kernel candidates and cells"),
    "kernel_basis": QaPlotSpec("the first basis kernels", "2 kernel", "kernel basis"),
    "kernel_mosaic": QaPlotSpec("the spatial kernel on a 5x5 grid", "2 kernel",
                                "kernel mosaic (5x5)"),
    "spatial_model": QaPlotSpec("each basis coefficient's map and the background model",
                                "2 kernel", "spatial model and background"),
    "kernel_sum": QaPlotSpec("kernel-sum distribution with the clip limits", "2 kernel",
                             "kernel-sum distribution"),
    "residual_histogram": QaPlotSpec("difference/sqrt(variance) against N(0, 1)",
                                     "3 residuals", "difference / sigma histogram"),
    "worst_stamps": QaPlotSpec("stamps of the worst candidates", "3 residuals",
                               "worst candidates"),
    "dia_detections": QaPlotSpec("DIA sources over the difference image", "4 DIA sources",
                                 "DIA detections", rule="qa_dia"),
    "dia_cutouts": QaPlotSpec("science / template / difference cut-outs of the brightest "
                              "DIA sources", "4 DIA sources", "DIA cut-outs", rule="qa_dia"),
}


def qa_plot_keys(rule: str) -> tuple[str, ...]:
    """Keys of :data:`QA_PLOTS` drawn by ``rule`` (``"qa"`` or ``"qa_dia"``), in order."""
    return tuple(key for key, spec in QA_PLOTS.items() if spec.rule == rule)
