"""Configuration: the ip_diffim-named blocks and psfmatch's own sections.

* :mod:`psfmatch.config.lsst`: ``psf_match`` (``PsfMatchConfig`` + AL + DF, with the
  nested ``detectionConfig`` and ``warpingConfig``) and ``ModelPsfMatchConfig``: the one
  mapping between ip_diffim's CamelCase field names and our PEP 8 attributes.
* :mod:`psfmatch.config.sections`: our snake_case sections (``warp``, ``detection``,
  ``output``, ``dia_sources``) and ``model_psf_match``.

Every default lives in one of these two modules.
"""

from psfmatch.config.lsst import (
    AL,
    BASIS_DEFAULTS,
    DF,
    DetectionConfig,
    ModelPsfMatchConfig,
    PsfMatchConfig,
    WarpingConfig,
)
from psfmatch.config.sections import (
    DetectionOptions,
    DiaOptions,
    ModelPsfMatchSection,
    OutputOptions,
    WarpOptions,
    model_kernel_config,
)

__all__ = [
    "AL",
    "BASIS_DEFAULTS",
    "DF",
    "DetectionConfig",
    "DetectionOptions",
    "DiaOptions",
    "ModelPsfMatchConfig",
    "ModelPsfMatchSection",
    "OutputOptions",
    "PsfMatchConfig",
    "WarpOptions",
    "WarpingConfig",
    "model_kernel_config",
]
