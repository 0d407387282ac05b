"""The one place that knows both spellings of a kernel-fitting option (ip_diffim names ↔ PEP 8).

The YAML ``psf_match:`` block uses ``ip_diffim``'s own ``PsfMatchConfig`` /
``PsfMatchConfigAL`` / ``PsfMatchConfigDF`` field names (plus the historical
``detectionConfig`` and afw's ``warpingConfig`` as nested blocks). Everything below
this module uses the PEP 8 names of the dataclasses here. Each field declares its
LSST name in ``metadata["lsst"]``, next to its default, which is ip_diffim's default
(read from ``lsst/ip_diffim`` at ``3a2e29f8``; see docs/configuration.md#psf-match-block).

Range and type checks that JSON Schema expresses well live in
``workflow/schemas/config.schema.yaml`` (checked by Snakemake before any job starts);
:func:`PsfMatchConfig.from_lsst` repeats the type checks that matter and adds the
cross-field rules (odd kernel size, list lengths, min ≤ max).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, get_type_hints

from psfmatch.errors import ConfigError

__all__ = [
    "CONVOLVE_MODES",
    "DecorrelateConfig",
    "DetectionConfig",
    "ModelPsfMatchConfig",
    "PsfMatchConfig",
    "ScaleVarianceConfig",
    "SubtractConfig",
    "WarpingConfig",
]

AL = "alard-lupton"
DF = "delta-function"

#: Basis-dependent defaults (``PsfMatchConfigAL.setDefaults`` / ``PsfMatchConfigDF.setDefaults``),
#: used when the YAML leaves the field ``null``.
BASIS_DEFAULTS: dict[str, dict[str, Any]] = {
    AL: {"max_condition_number": 5.0e7, "use_pca_for_spatial_kernel": False},
    DF: {"max_condition_number": 5.0e6, "use_pca_for_spatial_kernel": True},
}


def _f(lsst: str, default: Any, **kwargs: Any) -> Any:
    """Dataclass field carrying its LSST name."""
    return field(default=default, metadata={"lsst": lsst, **kwargs})


class _LsstMapped:
    """Mixin: conversion between the LSST-named mapping and the dataclass."""

    @classmethod
    def lsst_names(cls) -> dict[str, str]:
        """Map LSST field name -> PEP 8 attribute name."""
        return {f.metadata["lsst"]: f.name for f in fields(cls)}  # type: ignore[arg-type]

    @classmethod
    def from_lsst(cls, block: Mapping[str, Any] | None, *, where: str = "psf_match") -> Any:
        """Build from a mapping keyed by LSST names; unknown keys raise :class:`ConfigError`.

        ``where`` is the dotted config path used in error messages.
        """
        block = dict(block or {})
        names = cls.lsst_names()
        unknown = sorted(set(block) - set(names))
        if unknown:
            msg = f"{where}: unknown key(s) {unknown}; allowed keys are {sorted(names)}"
            raise ConfigError(msg)
        hints = get_type_hints(cls)
        kwargs: dict[str, Any] = {}
        for lsst_name, value in block.items():
            attr = names[lsst_name]
            sub = _nested_class(hints[attr])
            if sub is not None:
                kwargs[attr] = sub.from_lsst(value, where=f"{where}.{lsst_name}")
            else:
                kwargs[attr] = coerce_value(value, hints[attr], f"{where}.{lsst_name}")
        try:
            return cls(**kwargs)
        except ConfigError as err:
            msg = f"{where}: {err}"
            raise ConfigError(msg) from None

    def to_lsst(self) -> dict[str, Any]:
        """Mapping keyed by LSST names (lists for tuples), the inverse of :meth:`from_lsst`."""
        out: dict[str, Any] = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, _LsstMapped):
                value = value.to_lsst()
            elif isinstance(value, tuple):
                value = list(value)
            out[f.metadata["lsst"]] = value
        return out


def _nested_class(hint: Any) -> type[_LsstMapped] | None:
    return hint if isinstance(hint, type) and issubclass(hint, _LsstMapped) else None


def coerce_value(value: Any, hint: Any, where: str) -> Any:
    """Check ``value`` against a simple type hint and convert lists to tuples."""
    text = str(hint)
    if value is None:
        if "None" in text:
            return None
        msg = f"{where} must not be null"
        raise ConfigError(msg)
    if text.startswith("tuple"):
        if not isinstance(value, list | tuple):
            msg = f"{where} must be a list, got {value!r}"
            raise ConfigError(msg)
        item_type = int if "int" in text else float if "float" in text else str
        return tuple(coerce_scalar(v, item_type, where) for v in value)
    for scalar in (bool, int, float, str):
        if scalar.__name__ in text:
            return coerce_scalar(value, scalar, where)
    return value


def coerce_scalar(value: Any, kind: type, where: str) -> Any:
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, int | float) and not isinstance(value, bool),
        str: isinstance(value, str),
    }[kind]
    if not ok:
        msg = f"{where} must be of type {kind.__name__}, got {value!r}"
        raise ConfigError(msg)
    return float(value) if kind is float else value


@dataclass(frozen=True, kw_only=True)
class DetectionConfig(_LsstMapped):
    """Candidate detection (ip_diffim's historical ``DetectionConfig``).

    See docs/candidates.md#detection.
    """

    det_threshold: float = _f("detThreshold", 10.0)
    det_threshold_type: str = _f("detThresholdType", "pixel_stdev")
    det_on_template: bool = _f("detOnTemplate", True)
    bad_mask_planes: tuple[str, ...] = _f("badMaskPlanes", ("NO_DATA", "EDGE", "SAT"))
    fp_npix_min: int = _f("fpNpixMin", 5)
    fp_npix_max: int = _f("fpNpixMax", 500)
    fp_grow_kernel_scaling: float = _f("fpGrowKernelScaling", 1.0)
    fp_grow_pix: int = _f("fpGrowPix", 30)
    scale_by_fwhm: bool = _f("scaleByFwhm", True)

    def __post_init__(self) -> None:
        types = ("value", "stdev", "variance", "pixel_stdev")
        if self.det_threshold_type not in types:
            msg = f"detThresholdType must be one of {types}, got {self.det_threshold_type!r}"
            raise ConfigError(msg)
        if self.fp_npix_min > self.fp_npix_max:
            msg = f"fpNpixMin ({self.fp_npix_min}) exceeds fpNpixMax ({self.fp_npix_max})"
            raise ConfigError(msg)


@dataclass(frozen=True, kw_only=True)
class WarpingConfig(_LsstMapped):
    """Template warping (afw ``WarperConfig``, docs/warp-and-subtract.md#warping)."""

    warping_kernel_name: str = _f("warpingKernelName", "lanczos3")
    mask_warping_kernel_name: str = _f("maskWarpingKernelName", "bilinear")
    interp_length: int = _f("interpLength", 10)
    cache_size: int = _f("cacheSize", 1_000_000)
    grow_full_mask: tuple[str, ...] = _f("growFullMask", ("EDGE",))

    def __post_init__(self) -> None:
        kernels = ("bilinear", "lanczos3", "lanczos4", "lanczos5")
        if self.warping_kernel_name not in kernels:
            msg = f"warpingKernelName must be one of {kernels}, got {self.warping_kernel_name!r}"
            raise ConfigError(msg)
        if self.mask_warping_kernel_name not in ("", *kernels):
            msg = (
                f"maskWarpingKernelName must be '' or one of {kernels}, "
                f"got {self.mask_warping_kernel_name!r}"
            )
            raise ConfigError(msg)


@dataclass(frozen=True, kw_only=True)
class PsfMatchConfig(_LsstMapped):
    """Kernel-fitting options: ``PsfMatchConfig`` + ``PsfMatchConfigAL`` + ``PsfMatchConfigDF``.

    One flat block serves both bases, selected by ``kernel_basis_set``; AL-only fields
    are ignored by DF and vice versa, as in ip_diffim's ``ConfigChoiceField``.
    ``max_condition_number`` and ``use_pca_for_spatial_kernel`` may be ``None`` in the
    input, meaning the chosen basis' own default (AL: 5.0e7 / False, DF: 5.0e6 / True);
    after construction they always hold a value.
    """

    # --- PsfMatchConfig (docs/configuration.md#psf-match-block)
    fit_for_background: bool = _f("fitForBackground", False)
    use_afw_background: bool = _f("useAfwBackground", False)
    kernel_basis_set: str = _f("kernelBasisSet", AL)
    kernel_size: int = _f("kernelSize", 21)
    scale_by_fwhm: bool = _f("scaleByFwhm", True)
    kernel_size_fwhm_scaling: float = _f("kernelSizeFwhmScaling", 6.0)
    kernel_size_min: int = _f("kernelSizeMin", 21)
    kernel_size_max: int = _f("kernelSizeMax", 35)
    spatial_model_type: str = _f("spatialModelType", "chebyshev1")
    spatial_kernel_order: int = _f("spatialKernelOrder", 2)
    spatial_bg_order: int = _f("spatialBgOrder", 1)
    size_cell_x: int = _f("sizeCellX", 128)
    size_cell_y: int = _f("sizeCellY", 128)
    n_star_per_cell: int = _f("nStarPerCell", 5)
    max_spatial_iterations: int = _f("maxSpatialIterations", 3)
    use_pca_for_spatial_kernel: bool | None = _f("usePcaForSpatialKernel", None)
    subtract_mean_for_pca: bool = _f("subtractMeanForPca", True)
    num_principal_components: int = _f("numPrincipalComponents", 5)
    single_kernel_clipping: bool = _f("singleKernelClipping", True)
    kernel_sum_clipping: bool = _f("kernelSumClipping", True)
    spatial_kernel_clipping: bool = _f("spatialKernelClipping", True)
    check_condition_number: bool = _f("checkConditionNumber", False)
    bad_mask_planes: tuple[str, ...] = _f("badMaskPlanes", ("NO_DATA", "EDGE", "SAT"))
    candidate_residual_mean_max: float = _f("candidateResidualMeanMax", 0.25)
    candidate_residual_std_max: float = _f("candidateResidualStdMax", 1.50)
    use_core_stats: bool = _f("useCoreStats", False)
    candidate_core_radius: int = _f("candidateCoreRadius", 3)
    max_ksum_sigma: float = _f("maxKsumSigma", 3.0)
    max_condition_number: float | None = _f("maxConditionNumber", None)
    condition_number_type: str = _f("conditionNumberType", "EIGENVALUE")
    max_spatial_condition_number: float = _f("maxSpatialConditionNumber", 1.0e10)
    iterate_single_kernel: bool = _f("iterateSingleKernel", False)
    constant_variance_weighting: bool = _f("constantVarianceWeighting", True)
    calculate_kernel_uncertainty: bool = _f("calculateKernelUncertainty", False)
    use_bic_for_kernel_basis: bool = _f("useBicForKernelBasis", False)
    # --- PsfMatchConfigAL (docs/basis.md#alard-lupton-sizing)
    alard_n_gauss: int = _f("alardNGauss", 3)
    alard_deg_gauss: tuple[int, ...] = _f("alardDegGauss", (4, 2, 2))
    alard_sig_gauss: tuple[float, ...] = _f("alardSigGauss", (0.7, 1.5, 3.0))
    alard_gauss_beta: float = _f("alardGaussBeta", 2.0)
    alard_min_sig: float = _f("alardMinSig", 0.7)
    alard_deg_gauss_deconv: int = _f("alardDegGaussDeconv", 3)
    alard_min_sig_deconv: float = _f("alardMinSigDeconv", 0.4)
    alard_n_gauss_deconv: int = _f("alardNGaussDeconv", 3)
    # --- PsfMatchConfigDF (docs/basis.md#regularization-matrix, docs/basis.md#choosing-lambda)
    use_regularization: bool = _f("useRegularization", True)
    regularization_type: str = _f("regularizationType", "centralDifference")
    central_regularization_stencil: int = _f("centralRegularizationStencil", 9)
    forward_regularization_orders: tuple[int, ...] = _f("forwardRegularizationOrders", (1, 2))
    regularization_border_penalty: float = _f("regularizationBorderPenalty", 3.0)
    lambda_type: str = _f("lambdaType", "absolute")
    lambda_value: float = _f("lambdaValue", 0.2)
    lambda_scaling: float = _f("lambdaScaling", 1e-4)
    lambda_step_type: str = _f("lambdaStepType", "log")
    lambda_min: float = _f("lambdaMin", -1.0)
    lambda_max: float = _f("lambdaMax", 2.0)
    lambda_step: float = _f("lambdaStep", 0.1)
    # --- nested blocks
    detection: DetectionConfig = field(
        default_factory=DetectionConfig, metadata={"lsst": "detectionConfig"}
    )
    warping: WarpingConfig = field(
        default_factory=WarpingConfig, metadata={"lsst": "warpingConfig"}
    )

    def __post_init__(self) -> None:
        enums = {
            "kernel_basis_set": (AL, DF),
            "spatial_model_type": ("chebyshev1", "polynomial"),
            "condition_number_type": ("EIGENVALUE", "SVD"),
            "regularization_type": ("centralDifference", "forwardDifference"),
            "lambda_type": ("absolute", "relative", "minimizeBiasedRisk", "minimizeUnbiasedRisk"),
            "lambda_step_type": ("log", "linear"),
        }
        for attr, allowed in enums.items():
            if getattr(self, attr) not in allowed:
                msg = f"{_lsst(attr)} must be one of {allowed}, got {getattr(self, attr)!r}"
                raise ConfigError(msg)
        for attr, value in BASIS_DEFAULTS[self.kernel_basis_set].items():
            if getattr(self, attr) is None:
                object.__setattr__(self, attr, value)
        if self.kernel_size % 2 == 0:
            msg = f"kernelSize must be odd, got {self.kernel_size}"
            raise ConfigError(msg)
        if self.kernel_size_min > self.kernel_size_max:
            msg = (
                f"kernelSizeMin ({self.kernel_size_min}) exceeds "
                f"kernelSizeMax ({self.kernel_size_max})"
            )
            raise ConfigError(msg)
        for attr in ("alard_deg_gauss", "alard_sig_gauss"):
            if len(getattr(self, attr)) != self.alard_n_gauss:
                msg = (
                    f"{_lsst(attr)} has {len(getattr(self, attr))} entries but "
                    f"alardNGauss is {self.alard_n_gauss}"
                )
                raise ConfigError(msg)
        if self.central_regularization_stencil not in (5, 9):
            msg = (
                "centralRegularizationStencil must be 5 or 9, "
                f"got {self.central_regularization_stencil}"
            )
            raise ConfigError(msg)
        if any(o not in (1, 2, 3) for o in self.forward_regularization_orders):
            msg = (
                "forwardRegularizationOrders entries must be 1, 2 or 3, "
                f"got {list(self.forward_regularization_orders)}"
            )
            raise ConfigError(msg)
        if self.use_bic_for_kernel_basis and self.kernel_basis_set == DF:
            msg = ("useBicForKernelBasis chooses Alard-Lupton degrees; it cannot be used with "
                   "kernelBasisSet: delta-function")
            raise ConfigError(msg)
        if not 1 <= self.max_spatial_iterations <= 5:
            msg = f"maxSpatialIterations must be in 1..5, got {self.max_spatial_iterations}"
            raise ConfigError(msg)


def _lsst(attr: str) -> str:
    for f in fields(PsfMatchConfig):
        if f.name == attr:
            return f.metadata["lsst"]
    return attr


@dataclass(frozen=True, kw_only=True)
class ModelPsfMatchConfig(_LsstMapped):
    """``ModelPsfMatchConfig``'s own fields (docs/configuration.md#model-psf-blocks).

    The kernel options of model-PSF matching are a :class:`PsfMatchConfig` with the
    overrides of ``ModelPsfMatchConfig.setDefaults`` (see :meth:`kernel_config`).
    """

    do_auto_pad_psf: bool = _f("doAutoPadPsf", True)
    auto_pad_psf_to: float = _f("autoPadPsfTo", 1.4)
    pad_psf_by: int = _f("padPsfBy", 0)

    def __post_init__(self) -> None:
        if not 1.0 <= self.auto_pad_psf_to <= 2.0:
            msg = f"autoPadPsfTo must be in [1.0, 2.0], got {self.auto_pad_psf_to}"
            raise ConfigError(msg)
        if self.pad_psf_by % 2:
            msg = f"padPsfBy must be even, got {self.pad_psf_by}"
            raise ConfigError(msg)

    #: ``ModelPsfMatchConfig.setDefaults`` on ``kernel.active``, in LSST names.
    KERNEL_DEFAULTS: ClassVar[dict[str, Any]] = {
        "singleKernelClipping": False,
        "kernelSumClipping": False,
        "spatialKernelClipping": False,
        "checkConditionNumber": False,
        "constantVarianceWeighting": True,
        "scaleByFwhm": False,
    }

    @classmethod
    def kernel_from_lsst(cls, block: Mapping[str, Any] | None) -> PsfMatchConfig:
        """The kernel config of model-PSF matching from ``model_psf_match.kernel``.

        ip_diffim's ``PsfMatchConfig`` defaults, then ``setDefaults``
        (:attr:`KERNEL_DEFAULTS`), then the user's fields on top, as ip_diffim applies a
        config override after ``setDefaults``.
        """
        return PsfMatchConfig.from_lsst(
            {**cls.KERNEL_DEFAULTS, **dict(block or {})}, where="model_psf_match.kernel"
        )

    @staticmethod
    def kernel_config(base: PsfMatchConfig) -> PsfMatchConfig:
        """Apply ``ModelPsfMatchConfig.setDefaults``: no clipping, fixed AL sizing."""
        return dataclasses.replace(
            base,
            single_kernel_clipping=False,
            kernel_sum_clipping=False,
            spatial_kernel_clipping=False,
            check_condition_number=False,
            constant_variance_weighting=True,
            scale_by_fwhm=False,
        )


#: ``AlardLuptonSubtractConfig.mode`` values.
CONVOLVE_MODES = ("auto", "convolveTemplate", "convolveScience")


@dataclass(frozen=True, kw_only=True)
class DecorrelateConfig(_LsstMapped):
    """``DecorrelateALKernelConfig`` (docs/configuration.md#subtract-block)."""

    ignore_mask_planes: tuple[str, ...] = _f("ignoreMaskPlanes", (
        "INTRP", "EDGE", "DETECTED", "SAT", "CR", "BAD", "NO_DATA", "DETECTED_NEGATIVE"))
    complete_var_plane_propagation: bool = _f("completeVarPlanePropagation", False)


@dataclass(frozen=True, kw_only=True)
class ScaleVarianceConfig(_LsstMapped):
    """``ScaleVarianceConfig`` (meas_algorithms): the planes left out and the largest factor."""

    mask_planes: tuple[str, ...] = _f("maskPlanes", (
        "DETECTED", "DETECTED_NEGATIVE", "BAD", "SAT", "NO_DATA", "INTRP"))
    limit: float = _f("limit", 10.0)

    def __post_init__(self) -> None:
        if not self.limit >= 1.0:
            msg = f"limit must be >= 1, got {self.limit}"
            raise ConfigError(msg)


@dataclass(frozen=True, kw_only=True)
class SubtractConfig(_LsstMapped):
    """``AlardLuptonSubtractConfig``'s own fields (docs/configuration.md#subtract-block).

    The kernel fit (``makeKernel``) is the ``psf_match`` block; the source-selection
    fields ``maxKernelSources`` and ``excludeMaskPlanes`` are ``detection.max_candidates``
    and ``detection.exclude_mask_planes``.
    """

    mode: str = _f("mode", "convolveTemplate")
    do_decorrelation: bool = _f("doDecorrelation", True)
    decorrelate: DecorrelateConfig = field(
        default_factory=DecorrelateConfig, metadata={"lsst": "decorrelate"}
    )
    required_template_fraction: float = _f("requiredTemplateFraction", 0.1)
    min_template_fraction_for_expected_success: float = _f(
        "minTemplateFractionForExpectedSuccess", 0.2)
    do_scale_variance: bool = _f("doScaleVariance", True)
    scale_variance: ScaleVarianceConfig = field(
        default_factory=ScaleVarianceConfig, metadata={"lsst": "scaleVariance"}
    )
    do_subtract_background: bool = _f("doSubtractBackground", False)
    bad_mask_planes: tuple[str, ...] = _f("badMaskPlanes", ("NO_DATA", "BAD", "SAT", "EDGE"))
    preserve_template_mask: tuple[str, ...] = _f(
        "preserveTemplateMask", ("NO_DATA", "BAD", "HIGH_VARIANCE"))
    rename_template_mask: tuple[str, ...] = _f(
        "renameTemplateMask", ("SAT", "INJECTED", "INJECTED_CORE"))
    preserve_mask_planes: tuple[str, ...] = _f("preserveMaskPlanes", (
        "INJECTED", "INJECTED_CORE", "INJECTED_TEMPLATE", "INJECTED_CORE_TEMPLATE"))

    def __post_init__(self) -> None:
        if self.mode not in CONVOLVE_MODES:
            msg = f"mode must be one of {CONVOLVE_MODES}, got {self.mode!r}"
            raise ConfigError(msg)
        for attr in ("required_template_fraction", "min_template_fraction_for_expected_success"):
            if not 0.0 <= getattr(self, attr) <= 1.0:
                msg = f"{_lsst_of(type(self), attr)} must be in [0, 1], got {getattr(self, attr)}"
                raise ConfigError(msg)


def _lsst_of(cls: type, attr: str) -> str:
    for f in fields(cls):
        if f.name == attr:
            return f.metadata["lsst"]
    return attr
