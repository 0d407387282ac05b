"""Configuration: the ip_diffim-named blocks and psfmatch's own sections.

* :mod:`psfmatch.config.lsst`: ``psf_match`` (``PsfMatchConfig`` + AL + DF, with the
  nested ``detectionConfig`` and ``warpingConfig``), ``ModelPsfMatchConfig`` and
  ``subtract`` (``AlardLuptonSubtractConfig``): the one mapping between ip_diffim's
  CamelCase field names and our PEP 8 attributes.
* :mod:`psfmatch.config.sections`: our snake_case sections (``warp`` with its ``sources``
  sub-block, ``detection``, ``output``, ``difference``) and ``model_psf_match``;
  :mod:`psfmatch.config.dia`: the ``dia_sources`` section;
  :mod:`psfmatch.config.kernel_fit`: the ``kernel_fit`` section.
* :mod:`psfmatch.config.validate`: config validation with one line per mistake.

Every default lives in one of these modules.
"""

from psfmatch.config.dia import DiaOptions
from psfmatch.config.kernel_fit import KernelFitOptions, check_kernel_fit
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
    "KernelFitOptions",
    "ModelPsfMatchConfig",
    "ModelPsfMatchSection",
    "OutputOptions",
    "PsfMatchConfig",
    "RegistrationOptions",
    "ScaleVarianceConfig",
    "SubtractConfig",
    "WarpOptions",
    "WarpingConfig",
    "check_kernel_fit",
    "check_subtraction",
    "model_kernel_config",
]
