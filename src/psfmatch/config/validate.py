"""Validate the workflow config against its JSON Schema, with short messages.

Snakemake's own ``validate`` reports a failure with the whole schema (hundreds of lines)
and the whole config; :func:`validate_config` names each bad key by its dotted path,
says what is wrong in one line, and suggests the nearest allowed key for a misspelt one.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

import jsonschema

from psfmatch.errors import ConfigError

__all__ = ["config_problems", "validate_config"]

#: Most problems listed in one error (the rest are counted).
_MAX_LISTED = 8


def _allowed_keys(schema: Mapping[str, Any], root: Mapping[str, Any]) -> list[str]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        node: Any = root
        for part in ref[2:].split("/"):
            node = node[part]
        schema = node
    return sorted(schema.get("properties", {}))


def _describe(error: jsonschema.ValidationError, root: Mapping[str, Any]) -> str:
    where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    if error.validator == "additionalProperties" and isinstance(error.instance, Mapping):
        allowed = _allowed_keys(error.schema, root)
        lines = []
        for key in sorted(set(error.instance) - set(allowed)):
            near = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
            hint = f"did you mean {near[0]!r}?" if near else f"allowed here: {allowed}"
            prefix = f"{where}." if error.absolute_path else ""
            lines.append(f"{prefix}{key}: unknown key; {hint}")
        return "\n".join(lines)
    if error.validator == "required":
        return f"{where}: {error.message}"
    value = error.instance
    shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
    return f"{where} = {shown}: {error.message if len(error.message) <= 200 else error.validator}"


def config_problems(config: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    """One line per schema violation of ``config``, in key order (empty when valid)."""
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(dict(config)),
                    key=lambda e: [str(p) for p in e.absolute_path])
    lines: list[str] = []
    for error in errors:
        lines.extend(_describe(error, schema).splitlines())
    return lines


def validate_config(
    config: Mapping[str, Any],
    schema: Mapping[str, Any],
    *,
    configfiles: Iterable[str] = (),
) -> None:
    """Raise :class:`ConfigError` naming every key of ``config`` that breaks ``schema``.

    ``configfiles`` (the files the config was read from) are named in the message.
    """
    problems = config_problems(config, schema)
    if not problems:
        return
    files = [str(f) for f in configfiles]
    source = f" (read from {', '.join(files)})" if files else ""
    listed = problems[:_MAX_LISTED]
    more = len(problems) - len(listed)
    text = "\n  ".join(listed) + (f"\n  ... and {more} more" if more else "")
    msg = (f"invalid workflow config{source}; see workflow/schemas/config.schema.yaml and "
           f"config/README.md:\n  {text}")
    raise ConfigError(msg)
