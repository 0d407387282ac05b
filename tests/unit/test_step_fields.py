"""The record of which config fields each step reads (psfmatch.steps.fields)."""

from __future__ import annotations

import copy
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import get_type_hints

import numpy as np
import pytest
import yaml

from psfmatch import io
from psfmatch.config import (
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
from psfmatch.steps import fields as record
from psfmatch.steps.fields import STEP_READS, StepConfig, step_config, step_paths
from psfmatch.steps.solve import kernel_sum_clip

REPO = Path(__file__).resolve().parents[2]
SHIPPED = yaml.safe_load((REPO / "config" / "config.yaml").read_text())

#: Configs that switch every condition of the record on or off.
VARIANTS = {
    "al": {},
    "al_pca": {"usePcaForSpatialKernel": True},
    "al_bic": {"useBicForKernelBasis": True},
    "df": {"kernelBasisSet": "delta-function"},
    "df_no_pca": {"kernelBasisSet": "delta-function", "usePcaForSpatialKernel": False},
}


def _config(variant: str) -> dict:
    config = copy.deepcopy(SHIPPED)
    config["psf_match"].update(VARIANTS[variant])
    return config


def _known_paths() -> set[str]:
    """Every config path a step may declare: the fields of each section's dataclass."""
    known = set()

    def walk(cls, prefix):
        hints = get_type_hints(cls)
        for f in fields(cls):
            key = f.metadata.get("lsst", f.name)
            known.add(f"{prefix}.{key}")
            if isinstance(hints[f.name], type) and is_dataclass(hints[f.name]):
                walk(hints[f.name], f"{prefix}.{key}")

    walk(PsfMatchConfig, "psf_match")
    walk(SubtractConfig, "subtract")
    for section, cls in (("warp", WarpOptions), ("detection", DetectionOptions),
                         ("output", OutputOptions), ("model_psf_match", ModelPsfMatchSection),
                         ("dia_sources", DiaOptions), ("difference", DifferenceOptions),
                         ("kernel_fit", KernelFitOptions)):
        walk(cls, section)
    return known


def test_every_declared_path_is_a_config_field():
    known = _known_paths()
    for step, reads in STEP_READS.items():
        for path in (*reads.always, *(p for group in reads.when.values() for p in group)):
            assert path in known, f"step {step!r} declares {path!r}, which is no config field"
        assert set(reads.when) <= set(record.CONDITIONS), step


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("step", sorted(STEP_READS))
def test_a_step_decides_its_conditions_alike_from_its_own_params(step, variant):
    """A job sees only its params: its conditional fields must follow from them alone."""
    config = _config(variant)
    whole = step_paths(step, PsfMatchConfig.from_lsst(config["psf_match"]))
    own = step_config(step, config).get("psf_match", {})
    assert step_paths(step, PsfMatchConfig.from_lsst(own)) == whole


def test_params_do_not_depend_on_the_order_of_keys():
    def reverse(value):
        if isinstance(value, dict):
            return {k: reverse(value[k]) for k in reversed(list(value))}
        return value

    for step in STEP_READS:
        a, b = step_config(step, SHIPPED), step_config(step, reverse(SHIPPED))
        assert a == b
        assert repr(a) == repr(b), step  # Snakemake compares params as printed


def test_reading_an_undeclared_field_fails_loudly():
    cfg = StepConfig("select", step_config("select", SHIPPED))
    assert cfg.psf_match.size_cell_x == SHIPPED["psf_match"]["sizeCellX"]
    assert cfg.psf_match.detection.fp_grow_pix == 30
    with pytest.raises(UndeclaredConfigError, match=r"'select' read psf_match\.spatialKernelOrder"):
        _ = cfg.psf_match.spatial_kernel_order
    with pytest.raises(UndeclaredConfigError, match=r"detection\.background_box_size"):
        _ = cfg.detection.background_box_size
    with pytest.raises(UndeclaredConfigError, match=r"detectionConfig\.detThreshold"):
        _ = cfg.psf_match.detection.det_threshold


def test_a_step_whose_record_lacks_a_field_it_reads_fails(tmp_path, monkeypatch):
    """kernel_sum_clip reads maxKsumSigma: with that field missing from its record, the step
    stops instead of silently clipping with the default."""
    n = 12
    rng = np.random.default_rng(3)
    table = {
        "id": np.arange(n), "x": rng.uniform(0, 100, n), "y": rng.uniform(0, 100, n),
        "cell": np.zeros(n, dtype=np.int64), "rank": np.arange(n),
        "status": np.array(["GOOD"] * n, dtype=object), "stage": np.array([""] * n, dtype=object),
        "iteration": np.full(n, -1), "reason": np.array([""] * n, dtype=object),
        "kernel_sum": rng.normal(1.0, 0.01, n),
    }
    io.write_table(tmp_path / "in.parquet", table)
    config = {"psf_match": {"maxKsumSigma": 2.0, "kernelSumClipping": True,
                            "nStarPerCell": 20}}
    kernel_sum_clip(candidates_path=tmp_path / "in.parquet", output_candidates=tmp_path / "a.parquet",
                    config=step_config("kernel_sum_clip", config), iteration=0, label="pair 'p'")
    passes = io.read_table(tmp_path / "a.parquet").metadata["kernel_sum_passes"]
    assert passes[0]["limit"] == pytest.approx(2.0 * passes[0]["std"])  # the user's 2, not 3
    broken = record.StepReads(("psf_match.kernelSumClipping", "psf_match.nStarPerCell"))
    monkeypatch.setitem(STEP_READS, "kernel_sum_clip", broken)
    with pytest.raises(UndeclaredConfigError, match=r"psf_match\.maxKsumSigma"):
        kernel_sum_clip(candidates_path=tmp_path / "in.parquet",
                        output_candidates=tmp_path / "b.parquet",
                        config=step_config("kernel_sum_clip", config), iteration=0,
                        label="pair 'p'")
    assert not (tmp_path / "b.parquet").exists()


def test_unset_fields_are_left_out_and_take_the_defaults():
    params = step_config("convolve", {"psf_match": {}})
    assert params == {}
    assert StepConfig("convolve", params).psf_match.n_star_per_cell == 5  # ip_diffim's default
