"""The truth of a simulated pair: its kernel (:class:`TruthKernel`) and catalogues."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from psfmatch.convolution import correlate_spatial
from psfmatch.synth.params import SimulationParams, kernel_sigmas


@dataclass(frozen=True, kw_only=True)
class TruthKernel:
    """:math:`K_{x,y} = \\sum_j w_j(x, y) B_j` (see the module docstring), parent coords."""

    kernel_size: int
    sigmas: tuple[float, ...]
    scale: float
    shift: tuple[float, float]
    centre: tuple[float, float]
    half_extent: tuple[float, float]
    direction: tuple[float, float]
    jump: tuple[float, float, float] = (0.0, 0.0, 0.0)
    basis: tuple[np.ndarray, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        c = self.kernel_size // 2
        off = np.arange(self.kernel_size, dtype=np.float64) - c
        basis = []
        for sig in self.sigmas:
            b = np.zeros((self.kernel_size, self.kernel_size))
            for weight, dx, dy in self.peaks():
                gx = np.exp(-0.5 * ((off - self.shift[0] - dx) / sig) ** 2)
                gy = np.exp(-0.5 * ((off - self.shift[1] - dy) / sig) ** 2)
                g = np.outer(gy, gx)
                b += weight * g / g.sum()
            basis.append(self.scale * b / b.sum())
        object.__setattr__(self, "basis", tuple(basis))

    def peaks(self) -> list[tuple[float, float, float]]:
        """``(flux fraction, dx, dy)`` of each kernel peak relative to ``shift``."""
        dx, dy, fraction = self.jump
        if fraction == 0:
            return [(1.0, 0.0, 0.0)]
        return [(1.0 - fraction, 0.0, 0.0), (fraction, dx, dy)]

    @classmethod
    def from_params(cls, params: SimulationParams) -> TruthKernel:
        """The truth kernel of a simulation."""
        ny, nx = params.shape
        x0, y0 = params.xy0
        phi = math.radians(params.kernel_gradient_angle)
        a, c = math.cos(phi), math.sin(phi)
        norm = abs(a) + abs(c)
        return cls(kernel_size=params.kernel_size, sigmas=kernel_sigmas(params),
                   scale=float(params.photometric_scale), shift=params.kernel_shift,
                   centre=(x0 + (nx - 1) / 2.0, y0 + (ny - 1) / 2.0),
                   half_extent=((nx - 1) / 2.0, (ny - 1) / 2.0), direction=(a / norm, c / norm),
                   jump=params.tracking_jump)

    def mix_at(self, x: Any, y: Any) -> np.ndarray:
        """Mixing coordinate :math:`m = a u + c v` (in [-1, 1] over the science frame)."""
        u = (np.asarray(x, dtype=np.float64) - self.centre[0]) / self.half_extent[0]
        v = (np.asarray(y, dtype=np.float64) - self.centre[1]) / self.half_extent[1]
        return self.direction[0] * u + self.direction[1] * v

    def weights_at(self, x: Any, y: Any) -> np.ndarray:
        """Weights :math:`w_j(x, y)`, shape ``(n_basis, *broadcast(x, y).shape)``."""
        m = self.mix_at(x, y)
        return np.stack([0.5 * (1.0 - m), 0.5 * (1.0 + m)])

    def kernel_at(self, x: float, y: float) -> np.ndarray:
        """Kernel image ``(kernel_size, kernel_size)`` at parent position ``(x, y)``."""
        w = self.weights_at(x, y)
        return sum(float(wj) * b for wj, b in zip(w, self.basis, strict=True))

    def sum_at(self, x: Any, y: Any) -> np.ndarray:
        """Kernel sum at ``(x, y)`` (equals ``scale`` everywhere)."""
        w = self.weights_at(x, y)
        return sum(wj * b.sum() for wj, b in zip(w, self.basis, strict=True))

    def weight_images(self, shape: tuple[int, int], xy0: tuple[int, int]) -> list[np.ndarray]:
        """:math:`w_j` at every pixel of an image of ``shape`` whose ``[0, 0]`` is ``xy0``."""
        y = np.arange(shape[0], dtype=np.float64)[:, None] + xy0[1]
        x = np.arange(shape[1], dtype=np.float64)[None, :] + xy0[0]
        return list(self.weights_at(x, y))

    def apply(self, image: np.ndarray, *, xy0: tuple[int, int] = (0, 0)) -> np.ndarray:
        """``correlate_spatial(image, basis, weights)`` for an image at parent ``xy0``."""
        return correlate_spatial(image, self.basis, self.weight_images(np.shape(image), xy0))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able analytic description (rebuilds the kernel exactly)."""
        return {"model": "linear_gaussian_mixture", "kernel_size": int(self.kernel_size),
                "sigmas": [float(s) for s in self.sigmas], "scale": float(self.scale),
                "shift": [float(s) for s in self.shift],
                "centre": [float(s) for s in self.centre],
                "half_extent": [float(s) for s in self.half_extent],
                "direction": [float(s) for s in self.direction],
                "jump": [float(s) for s in self.jump]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TruthKernel:
        """Inverse of :meth:`to_dict`."""
        kw = {k: v for k, v in data.items() if k != "model"}
        return cls(kernel_size=int(kw["kernel_size"]), sigmas=tuple(kw["sigmas"]),
                   scale=float(kw["scale"]), shift=tuple(kw["shift"]),
                   centre=tuple(kw["centre"]), half_extent=tuple(kw["half_extent"]),
                   direction=tuple(kw["direction"]),
                   jump=tuple(kw.get("jump", (0.0, 0.0, 0.0))))




@dataclass(frozen=True, kw_only=True)
class Truth:
    """What the simulation put in (see :func:`make_pair`).

    Catalogues (plain dicts of numpy arrays, science parent pixels unless named otherwise):
    ``stars``/``galaxies``: x, y (scene position on the science grid; the science image
    centroid is at ``(x, y) - kernel_shift``), x_template, y_template, flux_template,
    flux_science (``= scale * flux_template``), in_frame, saturated (stars only);
    ``transients``: x, y (science centroid), flux_science; ``variables``: x, y,
    x_template, y_template, flux_template, flux_science, flux_difference
    (``= flux_science - scale * flux_template``); ``cosmic_rays_template`` /
    ``cosmic_rays_science``: one row per hit pixel, hit (index), x, y, flux.

    ``convolved`` is the image the truth kernel convolves: ``"template"`` (``S = K ⋆ T +
    b``) or, for ``blurrier="template"``, ``"science"`` (``T = K ⋆ S + b``). Then
    x, y are the science centroids, the template's are ``(x, y) - kernel_shift``,
    ``flux_template = scale * flux_science`` and ``flux_difference = flux_science -
    flux_template / scale`` (science counts).
    """

    params: SimulationParams
    kernel: TruthKernel
    photometric_scale: float
    background: tuple[float, float, float]
    bad_column: int | None
    catalogues: dict[str, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)
    convolved: str = "template"

    def background_at(self, x: Any, y: Any) -> np.ndarray:
        """Differential background :math:`b_0 + b_x u + b_y v` (ADU) at parent ``(x, y)``."""
        k = self.kernel
        u = (np.asarray(x, dtype=np.float64) - k.centre[0]) / k.half_extent[0]
        v = (np.asarray(y, dtype=np.float64) - k.centre[1]) / k.half_extent[1]
        b0, bx, by = self.background
        return b0 + bx * u + by * v

    def to_dict(self) -> dict[str, Any]:
        """JSON-able scalar/analytic part (catalogues excluded)."""
        return {"params": self.params.to_dict(), "kernel": self.kernel.to_dict(),
                "photometric_scale": float(self.photometric_scale),
                "background": [float(b) for b in self.background],
                "bad_column": None if self.bad_column is None else int(self.bad_column),
                "convolved": self.convolved}

    @classmethod
    def from_dict(cls, data: dict[str, Any],
                  catalogues: dict[str, dict[str, np.ndarray]] | None = None) -> Truth:
        """Inverse of :meth:`to_dict` (catalogues passed separately)."""
        return cls(params=SimulationParams.from_dict(data["params"]),
                   kernel=TruthKernel.from_dict(data["kernel"]),
                   photometric_scale=float(data["photometric_scale"]),
                   background=tuple(data["background"]), bad_column=data["bad_column"],
                   catalogues=dict(catalogues or {}),
                   convolved=data.get("convolved", "template"))


def source_table(truth: Truth) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Every simulated source as one flat table ``(columns, units)``.

    Columns: ``kind`` (star, galaxy, transient, variable), ``x``, ``y`` (science parent
    px; scene position, see :class:`Truth`), ``x_template``, ``y_template`` (NaN for
    transients), ``flux_template``, ``flux_science``, ``flux_difference``
    (``flux_science - scale * flux_template``, or ``flux_science - flux_template / scale``
    when the truth kernel convolves the science image), ``in_frame``.
    """
    cats, scale = truth.catalogues, truth.photometric_scale
    to_science = 1.0 / scale if truth.convolved == "science" else scale
    k = truth.kernel
    lo = np.asarray(k.centre) - np.asarray(k.half_extent) - 0.5
    hi = np.asarray(k.centre) + np.asarray(k.half_extent) + 0.5
    parts = []
    for kind, name in (("star", "stars"), ("galaxy", "galaxies"), ("transient", "transients"),
                       ("variable", "variables")):
        c = cats[name]
        n = c["x"].size
        ft = c.get("flux_template", np.zeros(n))
        parts.append({
            "kind": np.full(n, kind, dtype="U9"), "x": c["x"], "y": c["y"],
            "x_template": c.get("x_template", np.full(n, np.nan)),
            "y_template": c.get("y_template", np.full(n, np.nan)),
            "flux_template": ft, "flux_science": c["flux_science"],
            "flux_difference": c["flux_science"] - to_science * ft,
            "in_frame": (c["x"] >= lo[0]) & (c["x"] < hi[0]) & (c["y"] >= lo[1])
            & (c["y"] < hi[1]),
        })
    columns = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    units = {"x": "pix", "y": "pix", "x_template": "pix", "y_template": "pix",
             "flux_template": "adu", "flux_science": "adu", "flux_difference": "adu"}
    return columns, units


