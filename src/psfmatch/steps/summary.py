"""The per-run summary: one row per pair from whatever products and step logs exist.

Written by the Snakefile's ``onsuccess``/``onerror`` handlers (workflow/report.smk says
why a handler and not a rule), as ``results/qa/summary.parquet`` and ``summary.html``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from psfmatch import io
from psfmatch.logs import read_failure
from psfmatch.qa.summary import summary_html

__all__ = ["QA_SUMMARY_COLUMNS", "pair_outcome", "qa_summary"]

logger = logging.getLogger("psfmatch.steps")

#: Columns of the per-run summary table, in order.
QA_SUMMARY_COLUMNS: tuple[str, ...] = (
    "pair", "status", "failed_step", "error", "kernel_sum", "spatial_condition_number",
    "verdict", "n_candidates", "n_used", "n_good", "n_rejected", "residual_mean",
    "residual_std", "residual_clipped_mean", "residual_clipped_std", "plots",
    "n_dia_sources", "n_dia_unflagged", "dia_flags",
    "registration", "registration_n_matches", "registration_rms_pix", "warnings",
)

#: Steps whose failure leaves a pair without a product (not only without plots): a pair
#: whose ``metrics.json`` exists is still ``failed`` when one of these failed last.
PRODUCT_STEPS_AFTER_METRICS: tuple[str, ...] = ("detect_dia_sources",)


def pair_outcome(
    *,
    pair: str,
    metrics_path: str,
    plot_paths: list[str] | tuple[str, ...],
    logs: Mapping[str, str],
    warp_path: str | None = None,
    dia_path: str | None = None,
) -> dict[str, Any]:
    """One row of the run summary: the pair's health from whatever products and logs exist.

    * ``metrics.json`` exists → ``status = "ok"``, values from it; ``plots`` = how many
      of ``plot_paths`` exist (a pair that succeeded after an earlier failure gets its
      plots on the next run); if plots are missing and a log records an error (the
      ``qa`` step failed), ``failed_step`` and ``error`` say so;
    * else, if a step log (``logs``: path → step name) records an error, the most
      recently written such log gives ``status = "failed"``, ``failed_step`` and ``error``;
    * else ``status = "incomplete"`` (not run yet, interrupted, or killed without a
      Python error, e.g. by a batch system time limit).

    With ``dia_path`` (the pair's ``dia_sources.parquet``): ``n_dia_sources``,
    ``n_dia_unflagged`` (``flags == 0``) and ``dia_flags`` (``"NAME count"`` for every
    flag set on at least one source, in bit order) when it exists; when it does not and
    the DIA step's log records the most recent error, the pair is ``failed`` there (e.g.
    the bad-subtraction gate), although its difference exists.

    ``warp_path`` (the pair's ``warp.json``, when it exists) gives the registration
    columns: the method (``wcs`` or ``sources``), and for ``sources`` the number of
    matched stars and their rms (px). ``warnings`` joins ``metrics.json``'s warnings
    (spatial condition number above ``maxSpatialConditionNumber``, an estimated
    variance).
    """
    row: dict[str, Any] = dict.fromkeys(QA_SUMMARY_COLUMNS)
    row["pair"] = pair
    n_plots = sum(Path(p).is_file() for p in plot_paths)
    row["plots"] = f"{n_plots}/{len(plot_paths)}"
    failures = []
    for path, step in logs.items():
        error = read_failure(path)
        if error is not None:
            failures.append((os.stat(path).st_mtime, step, error, path))
    if warp_path is not None and Path(warp_path).is_file():
        registration = io.read_json(warp_path).get("registration") or {}
        transform = registration.get("transform") or {}
        row.update(registration=registration.get("method"),
                   registration_n_matches=transform.get("n_matches"),
                   registration_rms_pix=transform.get("rms_pix"))
    if Path(metrics_path).is_file():
        metrics = io.read_json(metrics_path)
        cands = metrics.get("candidates", {})
        diff = metrics.get("difference", {})
        row.update(
            status="ok", failed_step="", error="",
            kernel_sum=metrics.get("kernel_sum"),
            spatial_condition_number=metrics.get("spatial_condition_number"),
            verdict=metrics.get("verdict"),
            n_candidates=cands.get("total"), n_used=cands.get("used_in_final_fit"),
            n_good=cands.get("good"), n_rejected=cands.get("bad"),
            residual_mean=diff.get("mean"), residual_std=diff.get("std"),
            residual_clipped_mean=diff.get("clipped_mean"),
            residual_clipped_std=diff.get("clipped_std"),
            warnings="; ".join(metrics.get("warnings") or []),
        )
        row.update(_dia_counts(dia_path))
        dia_missing = dia_path is not None and row["n_dia_sources"] is None
        if failures and (n_plots < len(plot_paths) or dia_missing):
            _, step, error, path = max(failures)
            row.update(failed_step=step, error=f"{error} (log: {path})")
            if dia_missing and step in PRODUCT_STEPS_AFTER_METRICS:
                row["status"] = "failed"
        return row
    if failures:
        _, step, error, path = max(failures)
        row.update(status="failed", failed_step=step, error=f"{error} (log: {path})")
    else:
        row.update(status="incomplete", failed_step="",
                   error="no metrics.json and no step log records an error "
                         "(not run yet, interrupted, or killed)")
    return row


def _dia_counts(dia_path: str | None) -> dict[str, Any]:
    """Summary columns of a pair's DIA catalogue (None where it does not exist)."""
    if dia_path is None or not Path(dia_path).is_file():
        return {"n_dia_sources": None, "n_dia_unflagged": None, "dia_flags": "",
                "dia_flag_counts": {}}
    table = io.read_table(dia_path)
    flags = np.asarray(table.columns["flags"], dtype=np.int64)
    bits = table.metadata.get("flag_bits", {})
    counts = [(bit, name, int(np.count_nonzero(flags & (1 << int(bit)))))
              for name, bit in bits.items()]
    return {"n_dia_sources": int(flags.size),
            "n_dia_unflagged": int(np.count_nonzero(flags == 0)),
            "dia_flags": ", ".join(f"{name} {n}" for _, name, n in sorted(counts) if n),
            "dia_flag_counts": {name: n for _, name, n in sorted(counts)}}


def qa_summary(
    *,
    rows: list[Mapping[str, Any]],
    table_path: str,
    html_path: str,
) -> None:
    """Write the per-run summary (one row per pair) as Parquet and as an HTML table.

    The Parquet metadata also holds ``dia_flag_counts``: pair -> flag -> sources with it.
    """

    def column(name: str) -> np.ndarray:
        values = [row.get(name) for row in rows]
        if name in ("kernel_sum", "spatial_condition_number", "residual_mean", "residual_std",
                    "residual_clipped_mean", "residual_clipped_std", "registration_rms_pix"):
            return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
        if name.startswith("n_") or name == "registration_n_matches":
            return np.array([-1 if v is None else int(v) for v in values], dtype=np.int64)
        return np.array(["" if v is None else str(v) for v in values], dtype=object)

    columns = {name: column(name) for name in QA_SUMMARY_COLUMNS}
    counts = {s: int((columns["status"] == s).sum()) for s in ("ok", "failed", "incomplete")}
    dia = {str(row["pair"]): row["dia_flag_counts"] for row in rows if row.get("dia_flag_counts")}
    io.write_table(table_path, columns, metadata={"step": "qa_summary", "counts": counts,
                                                  "missing_integer": -1,
                                                  "dia_flag_counts": dia})
    title = "psfmatch run summary: " + ", ".join(f"{n} {s}" for s, n in counts.items())
    io.write_text(html_path, summary_html(rows, columns=QA_SUMMARY_COLUMNS, title=title))
    logger.info("run summary %s written to %s", counts, table_path)
