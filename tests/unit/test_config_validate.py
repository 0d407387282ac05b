"""Config validation with short messages, the warp section, and honest reporting.

* :func:`psfmatch.config.validate.validate_config` names each bad key in one line (the
  shipped schema, the shipped config);
* ``warp.registration`` / ``warp.sources`` (:class:`psfmatch.config.WarpOptions`);
* the verdict and warnings of ``metrics.json`` when the spatial condition number
  exceeds ``maxSpatialConditionNumber``, the run summary's registration/warnings
  columns and its text title, and the kernel-sum rejection reason with its threshold.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import yaml
from tests.snakemake_run import REPO

from psfmatch import io
from psfmatch.candidates import kernel_sum_reasons
from psfmatch.config import RegistrationOptions, WarpOptions
from psfmatch.config.validate import config_problems, validate_config
from psfmatch.diagnostics import verdict
from psfmatch.errors import ConfigError
from psfmatch.steps.summary import pair_outcome, qa_summary

SCHEMA = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
SHIPPED = yaml.safe_load((REPO / "config/config.yaml").read_text())


def _with(**changes):
    config = copy.deepcopy(SHIPPED)
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        node = config
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return config


def test_shipped_config_and_the_off_switches_are_valid():
    assert config_problems(SHIPPED, SCHEMA) == []
    off = _with(simulate=None, model_psf_match=None)
    assert config_problems(off, SCHEMA) == []
    assert config_problems(_with(model_psf_match__exposures=None), SCHEMA) == []


@pytest.mark.parametrize(
    ("changes", "line"),
    [
        ({"psf_match__kernalSize": 21}, "psf_match.kernalSize: unknown key; did you mean "
                                        "'kernelSize'?"),
        ({"warp__sources__min_match": 5}, "warp.sources.min_match: unknown key; did you "
                                          "mean 'min_matches'?"),
        ({"detektion": {}}, "detektion: unknown key; did you mean 'detection'?"),
        ({"zzz": 1}, "zzz: unknown key; allowed here: ['detection', "),
        ({"warp__registration": "stars"}, "warp.registration = 'stars': 'stars' is not one "
                                          "of ['auto', 'wcs', 'sources']"),
        ({"psf_match__sizeCellX": 0}, "psf_match.sizeCellX = 0: 0 is less than the minimum "
                                      "of 32"),
    ],
)
def test_each_problem_is_one_line(changes, line):
    problems = config_problems(_with(**changes), SCHEMA)
    assert len(problems) == 1, problems
    assert problems[0].startswith(line), problems[0]


def test_validate_config_names_the_files_and_stays_short():
    config = _with(psf_match__kernalSize=21, warp__registraton="auto")
    with pytest.raises(ConfigError) as info:
        validate_config(config, SCHEMA, configfiles=["config/config.yaml", "my.yaml"])
    text = str(info.value)
    assert text.startswith("invalid workflow config (read from config/config.yaml, my.yaml)")
    assert len(text.splitlines()) == 3  # the heading and one line per mistake
    config = _with(**{f"psf_match__bad{i}": i for i in range(12)})
    with pytest.raises(ConfigError, match=r"\.\.\. and 4 more"):
        validate_config(config, SCHEMA)


def test_warp_section():
    warp = WarpOptions.from_dict({"registration": "sources",
                                  "sources": {"min_matches": 12, "scale_range": [0.9, 1.1]}},
                                 where="warp")
    assert warp.registration == "sources"
    assert warp.sources == RegistrationOptions(min_matches=12, scale_range=(0.9, 1.1))
    assert WarpOptions.from_dict(None, where="warp") == WarpOptions()
    assert WarpOptions().registration == "auto"
    with pytest.raises(ConfigError, match=r"warp\.registration = 'stars': use one of"):
        WarpOptions.from_dict({"registration": "stars"}, where="warp")
    with pytest.raises(ConfigError, match=r"warp\.sources\.min_matches = 2: must be >= 3"):
        WarpOptions.from_dict({"sources": {"min_matches": 2}}, where="warp")
    with pytest.raises(ConfigError, match=r"warp\.sources: unknown key\(s\) \['min_match'\]"):
        WarpOptions.from_dict({"sources": {"min_match": 3}}, where="warp")


def test_schema_and_dataclass_agree_on_the_sources_block():
    schema_keys = set(SCHEMA["properties"]["warp"]["properties"]["sources"]["properties"])
    assert schema_keys == set(RegistrationOptions.__dataclass_fields__)
    warp_keys = set(SCHEMA["properties"]["warp"]["properties"])
    assert warp_keys == set(WarpOptions.__dataclass_fields__)


# ---------------------------------------------------------------------- honest reporting
def test_verdict_reflects_the_condition_number():
    assert verdict(30, 3) == "well constrained"
    assert verdict(30, 3, ill_conditioned=True) == "ill-conditioned"
    assert verdict(2, 3, ill_conditioned=True) == "underconstrained"  # counts come first
    assert verdict(5, 3) == "poorly constrained"


def test_kernel_sum_reason_states_the_threshold():
    reasons = kernel_sum_reasons(np.array([1.5]), {"mean": 1.1, "std": 0.058}, 3.0)
    assert reasons[0] == "|ksum - 1.1| = 0.4 > 3.0 x 0.058 = 0.174"


def test_summary_shows_registration_and_warnings(tmp_path):
    metrics = {"kernel_sum": 1.0, "verdict": "ill-conditioned", "candidates": {},
               "difference": {}, "warnings": ["spatial condition number 6.33e+14 exceeds "
                                              "maxSpatialConditionNumber 1e+10",
                                              "science variance estimated from gain 4"]}
    io.write_json(tmp_path / "metrics.json", metrics)
    io.write_json(tmp_path / "warp.json", {"registration": {
        "method": "sources", "transform": {"n_matches": 158, "rms_pix": 0.112}}})
    row = pair_outcome(pair="p", metrics_path=str(tmp_path / "metrics.json"), plot_paths=[],
                       logs={}, warp_path=str(tmp_path / "warp.json"))
    assert (row["registration"], row["registration_n_matches"]) == ("sources", 158)
    assert row["registration_rms_pix"] == 0.112
    assert row["warnings"] == "; ".join(metrics["warnings"])
    qa_summary(rows=[row], table_path=str(tmp_path / "s.parquet"),
               html_path=str(tmp_path / "s.html"))
    table = io.read_table(tmp_path / "s.parquet").columns
    assert table["registration_n_matches"].dtype == np.int64
    html = (tmp_path / "s.html").read_text()
    assert "<title>psfmatch run summary: 1 ok, 0 failed, 0 incomplete</title>" in html
    assert "{" not in html.split("<title>")[1].split("</title>")[0]


def test_config_readme_describes_every_section_and_key():
    # config/README.md (the Snakemake workflow catalogue's page for the config) has a
    # heading per top-level section and names every key of our own sections.
    text = (REPO / "config" / "README.md").read_text()
    for section in SCHEMA["properties"]:
        assert f"## `{section}`" in text, section
    own = {"warp": SCHEMA["properties"]["warp"]["properties"],
           "warp.sources": SCHEMA["properties"]["warp"]["properties"]["sources"]["properties"],
           "detection": SCHEMA["properties"]["detection"]["properties"],
           "output": SCHEMA["properties"]["output"]["properties"],
           "model_psf_match": SCHEMA["properties"]["model_psf_match"]["properties"]}
    for section, keys in own.items():
        for key in keys:
            assert f"| `{key}` |" in text, f"{section}.{key}"
    psf_match = text.split("## `psf_match`")[1]
    for key in SCHEMA["properties"]["psf_match"]["properties"]:
        # every field is listed, by name or by its family (alard*, lambda*, candidateResidual*)
        assert (f"`{key}`" in psf_match
                or any(key.startswith(p) for p in ("alard", "lambda", "candidateResidual"))), key


@pytest.mark.parametrize("name", ["config", "pairs", "exposures"])
def test_schema_descriptions_are_whole(name):
    # An unquoted description with a comma inside a YAML flow mapping ({type: ...,
    # description: a, b}) is cut at the comma and the rest becomes a key without value.
    schema = yaml.safe_load((REPO / f"workflow/schemas/{name}.schema.yaml").read_text())

    def none_keys(node, path=""):
        if isinstance(node, dict):
            for key, value in node.items():
                if value is None:
                    yield f"{path}/{key}"
                yield from none_keys(value, f"{path}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                yield from none_keys(value, f"{path}[{i}]")

    assert list(none_keys(schema)) == []
