"""What ingest had to assume about an input image, carried in the exposure's metadata.

When an input has no variance map, ingest estimates one from the gain, read noise and
sky (:func:`psfmatch.io._convert.estimate_variance`); when a saturation level comes from
the header or the pairs sheet, ingest flags ``SAT`` itself. Both facts are written into
the exposure's metadata under :data:`NOTE_CARDS` (FITS ``HIERARCH`` cards of the afw
products), travel with the image through warp and convolve, and reach ``metrics.json``
and the run summary through :func:`input_notes`. No file I/O happens here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["NOTE_CARDS", "input_notes"]

#: What was recorded -> the metadata key it is recorded under.
NOTE_CARDS: dict[str, str] = {
    "variance": "PSFMATCH VARIANCE",
    "saturation": "PSFMATCH SATURATION",
}


def input_notes(metadata: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, str]]:
    """``{role: {what: note}}`` of the notes in each role's metadata (roles without any left out).

    ``metadata`` maps a role (``science``, ``template``) to that exposure's metadata.
    """
    out: dict[str, dict[str, str]] = {}
    for role, meta in metadata.items():
        notes = {what: str(meta[key]) for what, key in NOTE_CARDS.items() if key in meta}
        if notes:
            out[role] = notes
    return out
