"""Route a step's logging (and warnings) to its Snakemake log file."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["log_to_file"]

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


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
        log.exception("step failed")
        raise
    finally:
        logging.captureWarnings(False)
        for lg, old in previous:
            lg.removeHandler(handler)
            lg.setLevel(old)
        handler.close()
