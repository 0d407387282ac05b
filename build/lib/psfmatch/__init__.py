"""psfmatch: PSF-matched image subtraction in the manner of LSST ip_diffim."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("psfmatch")
except PackageNotFoundError:  # imported from a source tree without installation
    __version__ = "0.1.0"

__all__ = ["__version__"]
