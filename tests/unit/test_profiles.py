"""The Snakemake profiles and the per-rule declarations they rely on stay consistent."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from psfmatch.resources import STEP_COSTS

REPO = Path(__file__).resolve().parents[2]
DEFAULT = yaml.safe_load((REPO / "profiles" / "default" / "config.yaml").read_text())
SLURM = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())


def _rules() -> dict[str, str]:
    """Rule name -> its text, for every rule of the workflow's rule files."""
    rules = {}
    for smk in sorted((REPO / "workflow").glob("*.smk")):
        text = smk.read_text()
        starts = [(m.start(), m.group(1)) for m in re.finditer(r"^rule (\w+):", text, re.M)]
        ends = [start for start, _ in starts[1:]] + [len(text)] if starts else []
        for (start, name), end in zip(starts, ends, strict=True):
            rules[name] = text[start:end]
    return rules


RULES = _rules()


def test_default_profile_sets_no_key_the_slurm_profile_needs():
    # The workflow profile is applied after --profile and replaces its keys one by one: a
    # shared key (retries, set-resources, ...) would silently undo the SLURM profile.
    assert not set(DEFAULT) & set(SLURM)
    assert DEFAULT["cores"] >= 1
    assert DEFAULT["rerun-incomplete"] is True
    assert "retries" not in DEFAULT  # off by Snakemake's default


def test_slurm_profile_leaves_site_settings_to_the_user():
    assert SLURM["executor"] == "slurm"
    assert SLURM["retries"] >= 1  # retried jobs ask for attempt-scaled memory
    defaults = SLURM["default-resources"]
    assert "slurm_partition" not in defaults
    assert "slurm_account" not in defaults
    text = (REPO / "profiles" / "slurm" / "config.yaml").read_text()
    assert "# slurm_partition:" in text
    assert "# slurm_account:" in text


# Target rules (all, psf_match_all) only collect inputs: no job, nothing to declare.
JOB_RULES = sorted(n for n, body in RULES.items() if "script:" in body or "shell:" in body)


@pytest.mark.parametrize("name", JOB_RULES)
def test_every_rule_declares_environment_and_sized_resources(name):
    body = RULES[name]
    assert '"../envs/psfmatch.yaml"' in body, f"rule {name}: no conda env"
    assert re.search(r"container:\s+PSFMATCH_CONTAINER", body), f"rule {name}: no container"
    match = re.search(r'resources:\s+\*\*step_resources\("(\w+)"\)', body)
    assert match, f"rule {name}: no resources: **step_resources(...)"
    assert match.group(1) == name
    assert name in STEP_COSTS


def test_every_per_pair_rule_is_in_the_pair_group():
    per_pair = {n for n in JOB_RULES if re.search(r"\{(pair|sim)\}", RULES[n])}
    groups = SLURM["groups"]
    assert per_pair == {n for n, g in groups.items() if g == "pair"}
    assert set(groups) <= set(RULES)
    assert SLURM["group-components"]["pair"] >= 1
