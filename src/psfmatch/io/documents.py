"""JSON sidecars, YAML documents (schemas), text and figures."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from psfmatch.errors import InputFileError
from psfmatch.io._files import atomic_output, jsonable

__all__ = ["read_json", "read_yaml", "write_figure", "write_json", "write_text"]


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as JSON atomically (sorted keys, indent 2, trailing newline).

    numpy scalars/arrays, paths, tuples and sets are converted. NaN/inf are written
    as ``NaN``/``Infinity`` (Python's JSON dialect).
    """
    text = json.dumps(jsonable(obj), sort_keys=True, indent=2) + "\n"
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON document; :class:`InputFileError` naming the file if it is missing or invalid."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputFileError(f"JSON file {path} cannot be read ({exc})") from exc


def read_yaml(path: str | os.PathLike[str]) -> Any:
    """Read a YAML document safely; :class:`InputFileError` naming the file if it cannot be.

    Uses libyaml's parser where PyYAML was built with it (the same Python objects as the
    pure-Python parser, about ten times faster: the workflow reads its schemas on every
    Snakemake start, which on a cluster is once per job).
    """
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    path = Path(path)
    try:
        with path.open(encoding="utf-8") as handle:
            return yaml.load(handle, Loader=loader)  # noqa: S506 (a safe loader)
    except (OSError, yaml.YAMLError) as exc:
        raise InputFileError(f"YAML file {path} cannot be read ({exc})") from exc


# ---------------------------------------------------------------------- QA outputs
def write_figure(path: str | os.PathLike[str], figure: Any, *, dpi: int = 100) -> Path:
    """Render a matplotlib ``Figure`` to ``path`` (format from the suffix, Agg) atomically."""
    final = Path(path)
    with atomic_output(final) as tmp:
        figure.savefig(tmp, format=final.suffix.lstrip(".") or "png", dpi=dpi)
    return final


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 text atomically."""
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
