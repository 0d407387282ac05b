"""One function per workflow step: files in → validation → array core → files out.

These are what the ``scripts/`` adapters call; they are plain functions, importable
and testable without Snakemake. Only :mod:`psfmatch.io` touches files.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from psfmatch import io, synth
from psfmatch.errors import PsfMatchError

__all__ = ["ingest", "simulate"]

logger = logging.getLogger("psfmatch.steps")

#: How the pairs-sheet ``<role>_mask_convention`` column maps to reader options.
MASK_CONVENTIONS: dict[str, dict[str, Any]] = {
    "afw": {},
    "ztf": {"mask_bits": io.ZTF_MASK_BITS},
    "decam_cp": {"mask_values": io.DECAM_CP_MASK_VALUES},
}


def simulate(
    *,
    simulation: Mapping[str, Any],
    template_path: str,
    science_path: str,
    truth_path: str,
    sources_path: str,
) -> None:
    """Simulate one pair (:func:`psfmatch.synth.make_pair`) and write it with its truth.

    ``simulation`` holds :class:`~psfmatch.synth.SimulationParams` fields (lists are
    accepted for tuple fields). Writes the two exposures (afw layout), ``truth.json``
    (kernel, scale, background, catalogues' summary) and ``sources.parquet`` (every
    simulated source with its kind, position and fluxes).
    """
    params = synth.SimulationParams(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in simulation.items()}
    )
    logger.info("simulating %s", params)
    pair = synth.make_pair(params)
    io.write_exposure(template_path, pair.template)
    io.write_exposure(science_path, pair.science)
    truth = pair.truth.to_dict()
    truth["params"] = dataclasses.asdict(params)
    io.write_json(truth_path, truth)
    columns, units = synth.source_table(pair.truth)
    io.write_table(sources_path, columns, units=units, metadata={"step": "simulate", "params": truth["params"]})
    logger.info("wrote %s and %s", template_path, science_path)


def ingest(
    *,
    inputs: Mapping[str, str],
    output_path: str,
    label: str,
    mask_convention: str = "afw",
    gain: float | None = None,
) -> None:
    """Read one input image in any supported layout and write it in the afw layout.

    Parameters
    ----------
    inputs : mapping
        ``image`` and optionally ``variance``, ``weight``, ``error``, ``mask``, ``psf``
        paths (as in the pairs sheet).
    output_path : str
        Destination (afw MEF).
    label : str
        Names the pair and role in errors and logs.
    mask_convention : {"afw", "ztf", "decam_cp"}
        How to read a separate integer mask.
    gain : float, optional
        Gain (e-/ADU) for the variance estimate when no variance map is given.

    Image, mask and variance are copied unchanged (apart from dtype: float32/int32);
    non-finite image pixels and bad weights are flagged ``NO_DATA`` by the reader.
    """
    if mask_convention not in MASK_CONVENTIONS:
        msg = f"{label}: unknown mask convention {mask_convention!r}; use one of {sorted(MASK_CONVENTIONS)}"
        raise PsfMatchError(msg)
    try:
        exposure = io.read_exposure(
            inputs["image"],
            variance=inputs.get("variance"),
            weight=inputs.get("weight"),
            error=inputs.get("error"),
            mask=inputs.get("mask"),
            gain=gain,
            **MASK_CONVENTIONS[mask_convention],
        )
        if "psf" in inputs:
            exposure = exposure.with_(psf=io.read_psf_image(inputs["psf"]))
    except PsfMatchError as err:
        raise type(err)(f"{label}: {err}") from err
    usable = np.isfinite(exposure.image) & (exposure.mask == 0)
    logger.info(
        "%s: %s, planes %s, %.1f%% pixels unflagged, median variance %.4g",
        label,
        exposure.shape,
        sorted(exposure.mask_planes),
        100.0 * usable.mean(),
        float(np.nanmedian(exposure.variance[np.isfinite(exposure.variance)]))
        if np.isfinite(exposure.variance).any()
        else float("nan"),
    )
    io.write_exposure(output_path, exposure)
