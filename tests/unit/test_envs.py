"""The pinned software environments agree with pyproject.toml's dependencies.

pyproject.toml's lower bounds are the versions the project was tested with; the conda env
(`conda:` of every rule) and the container's pip lock (Containerfile) must pin exactly
those release series, so a step runs on the same numerical stack everywhere.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
REQUIREMENTS = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]
# Snakemake runs the jobs; it is not part of a job's environment (it mounts itself).
NOT_IN_CONDA_ENV = {"snakemake"}


def _lower_bound(spec: SpecifierSet) -> Version:
    bounds = [Version(s.version) for s in spec if s.operator in (">=", "==", "~=")]
    assert len(bounds) == 1, f"expected one lower bound in {spec}"
    return bounds[0]


def _conda_pins() -> dict[str, str]:
    env = yaml.safe_load((REPO / "envs" / "psfmatch.yaml").read_text())
    pins = {}
    for dep in env["dependencies"]:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)=([0-9][0-9A-Za-z.]*)", dep)
        assert match, f"envs/psfmatch.yaml: {dep!r} is not pinned as name=version"
        pins[canonicalize_name(match.group(1))] = match.group(2)
    return pins


def _lock_pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "envs" / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"envs/requirements.txt: {line!r} is not pinned with =="
            pins[canonicalize_name(name)] = version
    return pins


def _same_series(pin: Version, bound: Version) -> bool:
    """``pin`` is in the release series the bound names (2.4.6 is in 2.4; 8.0.2 in 8.0)."""
    return pin.release[: len(bound.release)] == bound.release


def test_conda_env_pins_python_at_the_supported_minimum():
    python = _conda_pins()["python"]
    minimum = _lower_bound(SpecifierSet(PYPROJECT["project"]["requires-python"]))
    assert _same_series(Version(python), minimum), (python, minimum)


@pytest.mark.parametrize("req", [r for r in REQUIREMENTS if r.name not in NOT_IN_CONDA_ENV],
                         ids=lambda r: r.name)
def test_conda_env_pins_each_dependency_in_the_tested_series(req):
    pins = _conda_pins()
    name = canonicalize_name(req.name)
    assert name in pins, f"envs/psfmatch.yaml does not pin {req.name}"
    pin = Version(pins[name])
    assert req.specifier.contains(pin), f"{req.name}={pin} violates pyproject's {req.specifier}"
    bound = _lower_bound(req.specifier)
    assert _same_series(pin, bound), f"{req.name}={pin} is not in the tested series {bound}"


def test_conda_env_holds_nothing_pyproject_does_not_ask_for():
    wanted = {canonicalize_name(r.name) for r in REQUIREMENTS} | {"python"}
    assert set(_conda_pins()) <= wanted


@pytest.mark.parametrize("req", REQUIREMENTS, ids=lambda r: r.name)
def test_container_lock_agrees_with_pyproject_and_the_conda_env(req):
    lock = _lock_pins()
    name = canonicalize_name(req.name)
    assert name in lock, f"envs/requirements.txt does not pin {req.name}"
    pin = Version(lock[name])
    assert req.specifier.contains(pin), f"{req.name}=={pin} violates pyproject's {req.specifier}"
    assert _same_series(pin, _lower_bound(req.specifier))
    conda = _conda_pins().get(name)
    if conda is not None:
        assert Version(conda) == pin, f"{req.name}: conda env {conda} != container lock {pin}"
