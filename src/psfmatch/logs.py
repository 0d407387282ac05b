"""Route a step's logging (and warnings) to its Snakemake log file."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["FAILURE_MARKER", "log_to_file", "read_failure"]

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: Message logged (with the traceback) when an exception escapes a step.
FAILURE_MARKER = "step failed"


@contextmanager
def log_to_file(path: str | Path, *, level: int = logging.INFO) -> Iterator[logging.Logger]:
    """Send records of the ``psfmatch`` logger tree and Python warnings to ``path``.

    An exception escaping the block is logged with its traceback before it propagates,
    so the log says why the step failed.
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter(_FORMAT))
    loggers = [logging.getLogger("psfmatch"), logging.getLogger("py.warnings")]
    previous = [(lg, lg.level) for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(level)
    logging.captureWarnings(True)
    log = logging.getLogger("psfmatch.step")
    try:
        yield log
    except BaseException:
        log.exception(FAILURE_MARKER)
        raise
    finally:
        logging.captureWarnings(False)
        for lg, old in previous:
            lg.removeHandler(handler)
            lg.setLevel(old)
        handler.close()


def read_failure(path: str | Path) -> str | None:
    """The error a step log records, or ``None`` if it records none (or is unreadable).

    A log written by :func:`log_to_file` for a step that raised ends with
    :data:`FAILURE_MARKER` and the traceback; the error is the traceback's final
    ``Type: message`` part (the last exception of a chain), joined into one line.
    """
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    marker = text.rfind(f": {FAILURE_MARKER}")
    if marker < 0:
        return None
    lines = [line for line in text[marker:].splitlines()[1:] if line.strip()]
    # Frames and source lines of a traceback are indented; the exception is not.
    tail: list[str] = []
    for line in reversed(lines):
        if line.startswith((" ", "\t")) or line.startswith("Traceback ("):
            break
        tail.append(line.strip())
    return " ".join(reversed(tail)) or "the step failed (no exception text in its log)"
