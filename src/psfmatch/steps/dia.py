"""DIA sources (rule ``detect_dia_sources``) and the run-level catalogue of all pairs.

:func:`detect_dia_sources` reads a pair's difference, science image, matched template,
final kernel candidates and measured FWHMs, runs :func:`psfmatch.dia.detect_and_measure`
(detection, measurement, flags, quality gate) and writes the catalogue
(``dia_sources.parquet``) and the alert-style cut-outs (``dia_cutouts.fits``).
:func:`dia_run_catalogue` concatenates the pairs' catalogues into one table with a
``pair`` column; the Snakefile's handlers call it after every run, so that a failed pair
costs its own rows only (workflow/dia.smk says why).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

import numpy as np

from psfmatch import io
from psfmatch.config.dia import DiaOptions
from psfmatch.dia import detect_and_measure, make_cutouts
from psfmatch.dia.catalogue import COLUMNS, DiaCatalogue
from psfmatch.dia.flags import FLAG_BITS, FLAG_DESCRIPTIONS
from psfmatch.dia.psf import difference_psf
from psfmatch.logs import read_failure
from psfmatch.steps.fields import StepConfig

__all__ = ["CUTOUT_HDUS", "detect_dia_sources", "dia_run_catalogue", "flag_counts"]

logger = logging.getLogger("psfmatch.steps")

#: HDUs of ``dia_cutouts.fits`` (besides ``METADATA``): three ``(n, size, size)`` float32
#: cubes, the catalogue ``id`` and the parent coordinates of each stamp's ``[0, 0]``.
CUTOUT_HDUS = ("SCIENCE", "TEMPLATE", "DIFFERENCE", "ID", "X0", "Y0")


def _options(cfg: StepConfig) -> DiaOptions:
    """The detection options, every field read through the step's record."""
    section = cfg.dia_sources
    return DiaOptions(**{f.name: getattr(section, f.name) for f in fields(DiaOptions)
                         if f.name not in DiaOptions.QA_FIELDS})


def _gate_sources(candidates: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``x``, ``y`` of the GOOD kernel candidates, highest S/N first."""
    good = np.flatnonzero(np.asarray(candidates["status"]) == "GOOD")
    if "snr" in candidates:
        good = good[np.argsort(-np.asarray(candidates["snr"], dtype=np.float64)[good],
                               kind="stable")]
    return (np.asarray(candidates["x"], dtype=np.float64)[good],
            np.asarray(candidates["y"], dtype=np.float64)[good])


def detect_dia_sources(
    *,
    difference_path: str,
    science_path: str,
    template_path: str,
    candidates_path: str,
    psf_path: str,
    catalogue_path: str,
    cutouts_path: str,
    config: Mapping[str, Any],
    label: str,
    kernel_path: str | None = None,
    difference_psf_path: str | None = None,
) -> DiaCatalogue:
    """Detect and measure the DIA sources of one pair; write the catalogue and cut-outs.

    Parameters
    ----------
    difference_path, science_path : str
        The pair's difference image and its (ingested) science image.
    template_path : str
        The matched template (``K ⋆ T``), or, with ``kernel_path``, the warped template,
        which is then convolved with the kernel here exactly as the ``convolve`` step
        does (used when ``output.matched_template`` is false). Its variance plane models
        the difference's correlated noise and it gets the forced ``template_flux``.
    candidates_path : str
        The final kernel-candidate table: its GOOD rows are the stars of the empirical
        PSF and the science sources of the bad-subtraction ratio.
    psf_path : str
        ``psf.json`` of the detect step: the science FWHM for a Gaussian PSF.
    catalogue_path, cutouts_path : str
        Outputs: ``dia_sources.parquet`` (one row per source, :data:`COLUMNS`, units in
        the field metadata, flag bits and detection numbers in the table metadata) and
        ``dia_cutouts.fits`` (:data:`CUTOUT_HDUS`).
    config : mapping
        The step's params (``dia_sources`` fields).
    label : str
        Names the pair in messages and errors.
    kernel_path : str, optional
        ``kernel.fits``, when ``template_path`` is the warped (unmatched) template.
    difference_psf_path : str, optional
        A PSF image of the difference (e.g. after decorrelation); used as given. Without
        it the PSF follows ``dia_sources.psf_source``
        (:func:`psfmatch.dia.psf.difference_psf`).

    Raises
    ------
    BadSubtractionError
        The quality gate tripped (nothing is written; the pair fails alone).
    """
    opts = _options(StepConfig("detect_dia_sources", config))
    difference = io.read_exposure(difference_path)
    science = io.read_exposure(science_path)
    template = io.read_exposure(template_path)
    if kernel_path is not None:
        from psfmatch.subtract import convolve_exposure, prepare_template_mask

        logger.info("%s: matching the warped template with %s", label, kernel_path)
        template = convolve_exposure(prepare_template_mask(template), io.read_kernel(kernel_path))
    gate_x, gate_y = _gate_sources(io.read_table(candidates_path).columns)
    if difference_psf_path is not None:
        psf: Any = io.read_psf_model(difference_psf_path)
        psf_info: dict[str, Any] = {"source": "file", "path": os.fspath(difference_psf_path)}
    else:
        fwhm = float(io.read_json(psf_path)["science"]["fwhm"])
        psf, psf_info = difference_psf(science, source=opts.psf_source, fwhm=fwhm,
                                       star_x=gate_x, star_y=gate_y)
        psf_info["science_fwhm_measured"] = fwhm
    logger.info("%s: PSF of the difference: %s", label, psf_info)
    catalogue = detect_and_measure(difference, psf, science=science, template=template,
                                   wcs=science.wcs, gate_sources=(gate_x, gate_y),
                                   options=opts, label=label)
    meta = catalogue.metadata
    logger.info(
        "%s: %d DIA sources (%d positive, %d negative, %d dipoles) at %.1f sigma; "
        "%d peaks rejected on mask planes %s; noise-only expectation %.2f peaks; gate: "
        "footprint ratio %.3g (std %.3g, %d footprints), detected fraction %.3g",
        label, len(catalogue), int(np.count_nonzero(~catalogue.columns["is_negative"])),
        int(np.count_nonzero(catalogue.columns["is_negative"])), meta["n_dipoles"],
        opts.threshold, sum(meta["rejected"].values()), meta["rejected"],
        meta["expected_noise_peaks"], meta["footprint_ratio_mean"],
        meta["footprint_ratio_std"], meta["n_science_footprints"], meta["detected_fraction"])
    cols = catalogue.columns
    stamps = make_cutouts(cols["x"], cols["y"], difference=difference, science=science,
                          template=template, size=opts.cutout_size)
    table_meta = {
        "step": "detect_dia_sources", "label": label, "psf": psf_info,
        "flag_bits": catalogue.flag_bits, "flag_descriptions": dict(FLAG_DESCRIPTIONS),
        "descriptions": catalogue.descriptions, "counts": flag_counts(cols["flags"]),
        "detection": meta,
    }
    io.write_table(catalogue_path, cols, units=catalogue.units, metadata=table_meta)
    io.write_arrays(cutouts_path, {
        "science": stamps["science"], "template": stamps["template"],
        "difference": stamps["difference"], "id": cols["id"], "x0": stamps["x0"],
        "y0": stamps["y0"]},
        metadata={"step": "detect_dia_sources", "label": label, "size": opts.cutout_size,
                  "unit": catalogue.units["psf_flux"], "hdus": list(CUTOUT_HDUS),
                  "template": "matched template (K * T)", "order": "catalogue rows"})
    return catalogue


def flag_counts(flags: np.ndarray) -> dict[str, int]:
    """Sources with each flag set (every flag of :data:`FLAG_BITS`), plus ``"none"``."""
    f = np.asarray(flags, dtype=np.int64)
    counts = {name: int(np.count_nonzero(f & (1 << bit))) for name, bit in FLAG_BITS.items()}
    counts["none"] = int(np.count_nonzero(f == 0))
    return counts


def dia_run_catalogue(
    *,
    catalogues: Mapping[str, str],
    logs: Mapping[str, Mapping[str, str]],
    output_path: str,
) -> dict[str, str]:
    """Concatenate the pairs' DIA catalogues into one table with a leading ``pair`` column.

    Parameters
    ----------
    catalogues : mapping
        Pair id -> path of its ``dia_sources.parquet`` (which may not exist).
    logs : mapping
        Pair id -> its step logs (path -> step name). A pair whose catalogue is older
        than a log that records an error is left out: that catalogue predates a failure
        of the current run (a pair that failed upstream keeps its old downstream files).
    output_path : str
        ``results/dia_sources.parquet``; written even when no pair has a catalogue (the
        schema, zero rows).

    Returns
    -------
    dict
        Pair id -> ``"ok"``, ``"missing"`` (no catalogue) or ``"stale"``; also in the
        table metadata (``pairs``).
    """
    parts, status, units = [], {}, {}
    for pair, path in catalogues.items():
        if not os.path.isfile(path):
            status[pair] = "missing"
            continue
        made = os.stat(path).st_mtime
        if any(read_failure(log) is not None and os.stat(log).st_mtime > made
               for log in logs.get(pair, {})):
            status[pair] = "stale"
            continue
        table = io.read_table(path)
        n = len(table.columns["id"])
        parts.append({"pair": np.full(n, pair, dtype=object), **table.columns})
        units[pair] = table.units
        status[pair] = "ok"
    columns: dict[str, np.ndarray] = {"pair": np.zeros(0, dtype=object)}
    columns.update({name: np.zeros(0, dtype=dtype) for name, (dtype, _, _) in COLUMNS.items()})
    if parts:
        columns = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    # a flux column's unit is the pairs' common image unit (per pair in the metadata)
    merged = {}
    for name, (_, unit, _) in COLUMNS.items():
        seen = {u.get(name, "") for u in units.values()}
        if len(seen) == 1:
            merged[name] = seen.pop()
        else:  # no pair, or pairs in different image units (flux columns only)
            merged[name] = ("" if not seen else "mixed") if unit == "flux" else unit
    io.write_table(output_path, columns, units=merged, metadata={
        "step": "dia_run_catalogue", "pairs": status,
        "units_by_pair": {p: {k: u[k] for k in ("psf_flux",) if k in u} for p, u in units.items()},
        "flag_bits": dict(FLAG_BITS), "flag_descriptions": dict(FLAG_DESCRIPTIONS),
        "descriptions": {"pair": "pair id (pairs sheet)",
                         **{k: d for k, (_, _, d) in COLUMNS.items()}},
    })
    logger.info("run DIA catalogue: %d sources from %d pairs (%s) written to %s",
                len(columns["pair"]), sum(s == "ok" for s in status.values()), status,
                output_path)
    return status
