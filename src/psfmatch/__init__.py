"""psfmatch: PSF-matched image subtraction in the manner of LSST ip_diffim."""

#: The package version; equals ``[project] version`` in pyproject.toml (a unit test
#: checks). Static, so that importing psfmatch costs no package-metadata lookup.
__version__ = "0.1.0"

__all__ = ["__version__"]
