"""Configuration: the ip_diffim-named blocks and psfmatch's own sections.

* :mod:`psfmatch.config.lsst`: ``psf_match`` (``PsfMatchConfig`` + AL + DF, with the
  nested ``detectionConfig`` and ``warpingConfig``), ``ModelPsfMatchConfig`` and
  ``subtract`` (``AlardLuptonSubtractConfig``): the one mapping between ip_diffim's
  CamelCase field names and our PEP 8 attributes.
* :mod:`psfmatch.config.sections`: our snake_case sections (``warp`` with its ``sources``
  sub-block, ``detection``, ``output``, ``difference``, ``dia_sources``) and ``model_psf_match``.

Every default lives in one of these two modules.
"""

from psfmatch.config.lsst import (
    AL,
    BASIS_DEFAULTS,
    DF,
    DecorrelateConfig,
    DetectionConfig,
    ModelPsfMatchConfig,
    PsfMatchConfig,
    ScaleVarianceConfig,
    SubtractConfig,
    WarpingConfig,
)
from psfmatch.config.sections import (
    DetectionOptions,
    DiaOptions,
    DifferenceOptions,
    ModelPsfMatchSection,
    OutputOptions,
    RegistrationOptions,
    WarpOptions,
    check_subtraction,
    model_kernel_config,
)

__all__ = [
    "AL",
    "BASIS_DEFAULTS",
    "DF",
    "DecorrelateConfig",
    "DetectionConfig",
    "DetectionOptions",
    "DiaOptions",
    "DifferenceOptions",
    "ModelPsfMatchConfig",
    "ModelPsfMatchSection",
    "OutputOptions",
    "PsfMatchConfig",
    "RegistrationOptions",
    "ScaleVarianceConfig",
    "SubtractConfig",
    "WarpOptions",
    "WarpingConfig",
    "check_subtraction",
    "model_kernel_config",
]
