"""Steps that make the demo inputs: ``simulate`` and ``simulated_psf``."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

from psfmatch import io, synth
from psfmatch.basis import SIGMA_TO_FWHM

__all__ = ["simulate", "simulated_psf"]

logger = logging.getLogger("psfmatch.steps")


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
    io.write_table(sources_path, columns, units=units,
                   metadata={"step": "simulate", "params": truth["params"]})
    logger.info("wrote %s and %s", template_path, science_path)


def simulated_psf(*, truth_path: str, output_path: str) -> None:
    """Write the constant PSF image of a simulated template (``truth.json`` params).

    The simulator renders template stars with :class:`psfmatch.synth.SimulatedPsf` of
    ``template_fwhm``; this is that model's image, for the model-PSF-matching demo (with
    ``blurrier="template"``, the blurred template's PSF at the image centre).
    """
    params = io.read_json(truth_path)["params"]
    if params.get("blurrier", "science") == "template":
        # the blurred template: its PSF (varying) at the image centre
        sim = synth.SimulationParams.from_dict(
            {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()})
        kernel = synth.TruthKernel.from_params(sim)
        psf = synth.SimulatedPsf(sim.sharp_fwhm / SIGMA_TO_FWHM, kernel)
        image, fwhm = psf.image_at(*kernel.centre), psf.fwhm
    else:
        psf = synth.SimulatedPsf(float(params["template_fwhm"]) / SIGMA_TO_FWHM)
        image, fwhm = psf.image_at(0.0, 0.0), float(params["template_fwhm"])
    io.write_psf_image(output_path, image, metadata={
        "PSFMODEL": "simulated_template", "PSFFWHM": fwhm,
    })
