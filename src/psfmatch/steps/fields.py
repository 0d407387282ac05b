"""The one record of which config fields each workflow step reads.

:data:`STEP_READS` maps a step (the function in :mod:`psfmatch.steps`, which is also the
name of its rule, except ``final_kernel``, which runs ``spatial_fit``) to the config paths
it reads, dotted from the root of ``config/config.yaml``: ``psf_match.kernelSize``,
``psf_match.detectionConfig.detThreshold``, ``detection.min_snr``, or a whole block such
as ``model_psf_match.kernel``. Some fields are read only under a condition of the
resolved ``psf_match`` config (the basis in use, PCA, BIC): :data:`CONDITIONS`.

Three users share this record:

* the workflow builds each rule's ``params`` with :func:`step_config`, so a job sees (and
  Snakemake compares) only what its step reads: changing a field reruns exactly its
  readers, and the keys are sorted, so the order of keys in a YAML file never matters;
* each step wraps what it received in :class:`StepConfig`, which raises
  :class:`~psfmatch.errors.UndeclaredConfigError` when the step reads a field it did not
  declare (it would otherwise silently get the default);
* the tests, which check both.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

from psfmatch.config import (
    AL,
    DF,
    DetectionOptions,
    DiaOptions,
    DifferenceOptions,
    KernelFitOptions,
    ModelPsfMatchSection,
    OutputOptions,
    PsfMatchConfig,
    SubtractConfig,
    WarpOptions,
)
from psfmatch.errors import UndeclaredConfigError

__all__ = [
    "CONDITIONS",
    "STEP_READS",
    "StepConfig",
    "StepReads",
    "step_config",
    "step_paths",
]


@dataclass(frozen=True)
class StepReads:
    """Config paths one step reads: ``always``, and ``when[condition]`` under a condition."""

    always: tuple[str, ...] = ()
    when: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


#: Conditions on the resolved ``psf_match`` config under which extra fields are read.
#: A step with a conditional group must itself read the fields its condition depends on
#: (tests/unit/test_step_fields.py checks that a step decides them alike from its own
#: fields and from the whole config).
CONDITIONS: dict[str, Callable[[PsfMatchConfig], bool]] = {
    "al": lambda c: c.kernel_basis_set == AL,
    "df": lambda c: c.kernel_basis_set == DF,
    "pca": lambda c: bool(c.use_pca_for_spatial_kernel),
    "bic": lambda c: c.kernel_basis_set == AL and c.use_bic_for_kernel_basis,
}


def _pm(*names: str) -> tuple[str, ...]:
    return tuple(f"psf_match.{n}" for n in names)


_BASIS = _pm("kernelBasisSet", "kernelSize")
_AL = _pm(
    "scaleByFwhm", "kernelSizeFwhmScaling", "kernelSizeMin", "kernelSizeMax", "alardNGauss",
    "alardDegGauss", "alardSigGauss", "alardGaussBeta", "alardMinSig", "alardMinSigDeconv",
)
_DF = _pm(
    "useRegularization", "regularizationType", "centralRegularizationStencil",
    "forwardRegularizationOrders", "regularizationBorderPenalty", "lambdaType", "lambdaValue",
    "lambdaScaling", "lambdaStepType", "lambdaMin", "lambdaMax", "lambdaStep",
)
_RESIDUALS = _pm(
    "candidateResidualMeanMax", "candidateResidualStdMax", "useCoreStats",
    "candidateCoreRadius", "badMaskPlanes",
)
_SINGLE_FIT = _RESIDUALS + _pm(
    "constantVarianceWeighting", "iterateSingleKernel", "checkConditionNumber",
    "maxConditionNumber", "conditionNumberType", "singleKernelClipping",
) + ("kernel_fit.fit_mask_planes",)
#: Our own DF options (``kernel_fit``), read by the DF fits whichever spatial fit is chosen.
_KERNEL_FIT_DF = ("kernel_fit.df_spatial_fit", "kernel_fit.df_lambda_range",
                  "kernel_fit.df_lambda_step")

#: Step -> the config paths it reads (see the module docstring).
STEP_READS: dict[str, StepReads] = {
    "simulate": StepReads(),  # reads its own block simulate.<name>, passed whole
    "simulated_psf": StepReads(),
    # the pairs-sheet row, and whether to look for a saturation level in the image
    "ingest": StepReads(("kernel_fit.estimate_saturation",)),
    "warp": StepReads(("psf_match.warpingConfig", "warp.same_grid_tolerance_pix",
                       "warp.registration", "warp.sources")),
    "detect": StepReads(
        _pm("detectionConfig.detThreshold", "detectionConfig.detThresholdType",
            "detectionConfig.detOnTemplate", "detectionConfig.badMaskPlanes",
            "detectionConfig.fpNpixMin", "detectionConfig.fpNpixMax")
        + ("detection.background_box_size", "detection.exclude_mask_planes"),
    ),
    "select": StepReads(
        _BASIS + _pm("detectionConfig.fpGrowKernelScaling", "detectionConfig.fpGrowPix",
                     "detectionConfig.scaleByFwhm", "badMaskPlanes", "sizeCellX", "sizeCellY")
        + ("detection.min_snr", "detection.max_candidates", "detection.exclude_mask_planes"),
        {"al": _AL},
    ),
    "fit_single_kernels": StepReads(
        _BASIS + _SINGLE_FIT + _pm("fitForBackground"),
        # BIC voters are the active candidates (top nStarPerCell of each cell)
        {"al": _AL + _pm("useBicForKernelBasis"), "df": _DF + _KERNEL_FIT_DF,
         "bic": _pm("nStarPerCell")},
    ),
    "kernel_sum_clip": StepReads(_pm("kernelSumClipping", "maxKsumSigma", "nStarPerCell")),
    "spatial_fit": StepReads(
        _pm("kernelBasisSet", "spatialModelType", "spatialKernelOrder", "spatialBgOrder",
            "nStarPerCell", "conditionNumberType", "maxSpatialConditionNumber",
            "usePcaForSpatialKernel", "calculateKernelUncertainty")
        + ("kernel_fit.spatial_order", "kernel_fit.max_spatial_order",
           "kernel_fit.candidate_weights"),
        # the PCA refit repeats the single-kernel fit and the kernel-sum clipping
        {"pca": _SINGLE_FIT + _pm("subtractMeanForPca", "numPrincipalComponents",
                                  "kernelSumClipping", "maxKsumSigma"),
         # the pooled DF fit builds the regularization matrix itself
         "df": _KERNEL_FIT_DF + ("kernel_fit.df_prior",)
         + _pm("regularizationType", "centralRegularizationStencil",
                                    "forwardRegularizationOrders",
                                    "regularizationBorderPenalty")},
    ),
    "assess": StepReads(_RESIDUALS + _pm("spatialKernelClipping", "nStarPerCell")
                        + ("kernel_fit.fit_mask_planes",)),
    "convolve": StepReads(_pm("nStarPerCell", "maxSpatialConditionNumber") + (
        "subtract.doSubtractBackground", "subtract.preserveTemplateMask",
        "subtract.renameTemplateMask", "subtract.preserveMaskPlanes")),
    "qa": StepReads(_pm("sizeCellX", "sizeCellY", "nStarPerCell", "badMaskPlanes")),
    "model_psf_kernel": StepReads(
        ("model_psf_match.target", "model_psf_match.kernel_sum", "model_psf_match.psf_match",
         "model_psf_match.kernel"),
    ),
    "model_psf_convolve": StepReads(),
    "detect_dia_sources": StepReads(tuple(
        f"dia_sources.{f.name}" for f in fields(DiaOptions) if f.name not in DiaOptions.QA_FIELDS
    )),
    "qa_dia": StepReads(tuple(f"dia_sources.{name}" for name in DiaOptions.QA_FIELDS)),
    # subtraction modes: the mode decision, the preconvolved science image, decorrelation
    "subtraction_mode": StepReads(
        ("subtract.mode", "subtract.requiredTemplateFraction",
         "subtract.minTemplateFractionForExpectedSuccess", "difference.preconvolution"),
    ),
    "preconvolve": StepReads(("subtract.badMaskPlanes",)),
    "decorrelate": StepReads(
        ("subtract.doDecorrelation", "subtract.decorrelate", "subtract.doScaleVariance",
         "subtract.scaleVariance", "difference.decorrelation_grid", "difference.zero_point",
         "difference.zero_point_key"),
    ),
}


def _reads(step: str) -> StepReads:
    try:
        return STEP_READS[step]
    except KeyError:
        msg = f"no config record for step {step!r}; steps: {sorted(STEP_READS)}"
        raise KeyError(msg) from None


def step_paths(step: str, psf_match: PsfMatchConfig) -> tuple[str, ...]:
    """Every config path ``step`` reads under the resolved ``psf_match`` config, in order."""
    reads = _reads(step)
    paths = list(reads.always)
    for condition, extra in reads.when.items():
        if CONDITIONS[condition](psf_match):
            paths += [p for p in extra if p not in paths]
    return tuple(paths)


def _sorted(value: Any) -> Any:
    """``value`` with the keys of every mapping in it sorted (lists keep their order)."""
    if isinstance(value, Mapping):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list | tuple):
        return [_sorted(v) for v in value]
    return value


def step_config(step: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """The part of ``config`` (the whole workflow config) that ``step`` reads.

    Nested as in the config file; keys that the config does not set are left out (the
    step then takes the default); every mapping's keys are sorted, so two configs that
    differ only in key order give equal (and equally printed) params.
    """
    resolved = PsfMatchConfig.from_lsst(config.get("psf_match"))
    out: dict[str, Any] = {}
    for path in step_paths(step, resolved):
        *parents, leaf = path.split(".")
        source: Any = config
        for key in parents:
            source = source.get(key, {}) if isinstance(source, Mapping) else {}
        if not isinstance(source, Mapping) or leaf not in source:
            continue
        target = out
        for key in parents:
            target = target.setdefault(key, {})
        target[leaf] = source[leaf]
    return _sorted(out)


#: Sections a step may read, with the class that gives their defaults.
_SECTIONS: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    "psf_match": lambda block: PsfMatchConfig.from_lsst(block),
    "warp": lambda block: WarpOptions.from_dict(block, where="warp"),
    "detection": lambda block: DetectionOptions.from_dict(block, where="detection"),
    "output": lambda block: OutputOptions.from_dict(block, where="output"),
    "model_psf_match": lambda block: ModelPsfMatchSection.from_dict(block),
    "dia_sources": lambda block: DiaOptions.from_dict(block, where="dia_sources"),
    "subtract": lambda block: SubtractConfig.from_lsst(block, where="subtract"),
    "difference": lambda block: DifferenceOptions.from_dict(block, where="difference"),
    "kernel_fit": lambda block: KernelFitOptions.from_dict(block, where="kernel_fit"),
}


def _key_of(obj: Any, attribute: str) -> str:
    """The config key of a dataclass attribute (its LSST name where it has one)."""
    for f in fields(obj):
        if f.name == attribute:
            return f.metadata.get("lsst", attribute)
    return attribute


class _Guarded:
    """Read-only view of a config dataclass that refuses undeclared fields."""

    __slots__ = ("_allowed", "_obj", "_path", "_step")

    def __init__(self, obj: Any, path: str, allowed: frozenset[str], step: str) -> None:
        object.__setattr__(self, "_obj", obj)
        object.__setattr__(self, "_path", path)
        object.__setattr__(self, "_allowed", allowed)
        object.__setattr__(self, "_step", step)

    def __getattr__(self, attribute: str) -> Any:
        value = getattr(self._obj, attribute)
        if attribute.startswith("_") or not is_dataclass(self._obj):
            return value
        path = f"{self._path}.{_key_of(self._obj, attribute)}"
        if path in self._allowed:
            return value
        if is_dataclass(value) and any(p.startswith(path + ".") for p in self._allowed):
            return _Guarded(value, path, self._allowed, self._step)
        msg = (f"step {self._step!r} read {path}, which its record in psfmatch.steps.fields "
               "(STEP_READS) does not declare: the workflow would pass it the default, and "
               "changing the field would not rerun it")
        raise UndeclaredConfigError(msg)

    def __setattr__(self, attribute: str, value: Any) -> None:
        msg = f"config of step {self._step!r} is read-only"
        raise AttributeError(msg)

    def __repr__(self) -> str:
        return f"<{self._path} of step {self._step!r}: {self._obj!r}>"


class StepConfig:
    """What a step function receives: its part of the config, read through its record.

    ``StepConfig("select", params)`` gives ``.psf_match``, ``.detection``, ``.warp``,
    ``.output``, ``.model_psf_match``, ``.subtract``, ``.difference``, ``.dia_sources`` and
    ``.kernel_fit``
    as the config objects of :mod:`psfmatch.config` (defaults for what the params leave
    out), on which reading an undeclared field raises
    :class:`~psfmatch.errors.UndeclaredConfigError`. :meth:`block` returns a section as
    received (for provenance in the products). Params may hold more than the step reads
    (a caller passing the whole config): only reads are checked.
    """

    def __init__(self, step: str, params: Mapping[str, Any] | None) -> None:
        self.step = step
        self._params = dict(params or {})
        unknown = sorted(set(self._params) - set(_SECTIONS))
        if unknown:
            msg = f"step {step!r}: unknown config section(s) {unknown}"
            raise UndeclaredConfigError(msg)
        self._objects = {name: make(self._params.get(name)) for name, make in _SECTIONS.items()}
        self._allowed = frozenset(step_paths(step, self._objects["psf_match"]))

    def block(self, section: str) -> dict[str, Any]:
        """The section's mapping as the step received it (``{}`` when absent)."""
        return dict(self._params.get(section, {}))

    def __getattr__(self, section: str) -> Any:
        if section.startswith("_") or section not in _SECTIONS:
            raise AttributeError(section)
        return _Guarded(self._objects[section], section, self._allowed, self.step)

