"""QA of a pair's DIA sources (rule ``qa_dia``): detections and a cut-out gallery as PNGs.

A rule of its own, not part of ``qa``: a pair whose DIA step fails (the bad-subtraction
gate) still gets its kernel and residual plots, and changing a ``dia_sources`` field
redraws only these two.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from psfmatch import io
from psfmatch.errors import PsfMatchError
from psfmatch.qa import qa_plot_keys
from psfmatch.qa.dia import dia_cutouts_plot, dia_detections_plot
from psfmatch.steps.fields import StepConfig

__all__ = ["qa_dia"]

logger = logging.getLogger("psfmatch.steps")


def qa_dia(
    *,
    difference_path: str,
    catalogue_path: str,
    cutouts_path: str,
    outputs: Mapping[str, str],
    config: Mapping[str, Any],
    label: str,
) -> dict[str, Any]:
    """Draw the DIA QA plots of one pair and write them as PNGs.

    ``outputs`` maps each key of ``psfmatch.qa.qa_plot_keys("qa_dia")`` to a path. The
    gallery shows the ``dia_sources.gallery_size`` sources of largest ``|snr|`` from
    ``dia_cutouts.fits``. Returns the :class:`~psfmatch.qa._common.QaPlot` of each plot.
    """
    missing = sorted(set(qa_plot_keys("qa_dia")) - set(outputs))
    if missing:
        raise PsfMatchError(f"{label}: QA outputs {missing} not given")
    n_gallery = StepConfig("qa_dia", config).dia_sources.gallery_size
    difference = io.read_exposure(difference_path)
    cols = io.read_table(catalogue_path).columns
    stamps, _ = io.read_arrays(cutouts_path)
    drawn: dict[str, Any] = {}
    drawn["dia_detections"] = dia_detections_plot(
        difference.image, x=cols["x"], y=cols["y"], is_negative=cols["is_negative"],
        is_dipole=cols["is_dipole"], flags=cols["flags"], xy0=difference.xy0, title=label)
    n = len(cols["id"])
    size = stamps["DIFFERENCE"].shape[-1] if n else 1
    cube = {k: stamps[k].reshape(n, size, size) for k in ("SCIENCE", "TEMPLATE", "DIFFERENCE")}
    drawn["dia_cutouts"] = dia_cutouts_plot(
        cube["SCIENCE"], cube["TEMPLATE"], cube["DIFFERENCE"], ids=cols["id"], snr=cols["snr"],
        flags=cols["flags"], n=n_gallery, title=label)
    for key, plot in drawn.items():
        io.write_figure(outputs[key], plot.figure)
    logger.info("%s: wrote %d DIA QA plots (%d sources, gallery of %d)", label, len(drawn), n,
                len(drawn["dia_cutouts"].data["ids"]))
    return drawn
