"""Geometry of phantoms: the patient's smooth random warp, the canvas being painted in chunks,
and the shapes painted on it (ellipsoids, paths, tubes)."""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.interpolate import CubicSpline

from universal.catalog import Catalog

LESION_CLASSES = ("Liver Tumor", "Kidney Tumor", "Kidney Cyst", "Pancreas Tumor")
_CHUNK_VOXELS = 1 << 21



class Warp:
    """World → reference coordinates: ``q = (p + D(p)) / scale``.

    ``scale`` (3,) is the patient's build. ``D`` is a smooth random displacement (mm): each
    component varies with the two other coordinates (x shifts with y and z, and so on), as a sum of
    products of cosines of wavelengths 70 to 420 mm, so organs bend, shear and shift against each
    other while the warp costs one operation per voxel and axis.
    """

    def __init__(self, rng: np.random.Generator):
        xy, z = rng.uniform(0.92, 1.08), rng.uniform(0.92, 1.08)
        self.scale = np.array([xy, xy, z])
        bands = (((260.0, 420.0), (3.0, 7.0)), ((160.0, 260.0), (2.0, 4.0)), ((70.0, 130.0), (1.0, 2.5)))
        self.terms = [
            [(rng.uniform(*amplitude), 2 * np.pi / rng.uniform(*wavelength, 2), rng.uniform(0, 2 * np.pi, 2))
             for wavelength, amplitude in bands]
            for _ in range(3)
        ]  # fmt: skip
        self.reach = np.array([sum(term[0] for term in terms) for terms in self.terms])

    def world_bounds(self, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World bounds (mm) that hold every point whose reference coordinates lie in [lo, hi]."""
        return lo * self.scale - self.reach, hi * self.scale + self.reach

    def apply(self, p: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
        """Reference coordinates (3 float32 arrays of the box's shape) of world points ``p`` (3 axes
        shaped to broadcast, as :attr:`Box.p`)."""
        q = []
        for axis, terms in enumerate(self.terms):
            u, v = (p[i] for i in range(3) if i != axis)
            shift = sum(a * np.cos(k[0] * u + f[0]) * np.cos(k[1] * v + f[1]) for a, k, f in terms)
            inverse = np.float32(1 / self.scale[axis])
            q.append(p[axis] * inverse + (shift * inverse).astype(np.float32))
        return tuple(q)


class Canvas:
    """The volume being painted, on the ascending RAS+ grid: tissue and label maps, body masks."""

    def __init__(self, axes: tuple[np.ndarray, ...], warp: Warp):
        self.axes, self.warp = axes, warp
        shape = tuple(len(a) for a in axes)
        self.tissue = np.zeros(shape, np.uint8)
        self.label = np.zeros(shape, np.uint8)
        self.body = np.zeros(shape, bool)
        self.cavity = np.zeros(shape, bool)

    def boxes(self, lo: Sequence[float], hi: Sequence[float], world: bool = False) -> Iterator[Box]:
        """Chunks of the grid covering the bounds [lo, hi] (reference mm, or world mm if ``world``)."""
        lo, hi = np.asarray(lo, float), np.asarray(hi, float)
        if not world:
            lo, hi = self.warp.world_bounds(lo, hi)
        ranges = []
        for coords, a, b in zip(self.axes, lo, hi, strict=True):
            start, stop = int(np.searchsorted(coords, a)), int(np.searchsorted(coords, b, side="right"))
            if start >= stop:
                return
            ranges.append((start, stop))
        (i0, i1), (j0, j1), (k0, k1) = ranges
        step = max(1, _CHUNK_VOXELS // ((i1 - i0) * (j1 - j0)))
        for k in range(k0, k1, step):
            yield Box(self, (slice(i0, i1), slice(j0, j1), slice(k, min(k + step, k1))))


class Box:
    """A block of the canvas: world axes ``p`` (broadcastable), reference coordinates ``q``."""

    def __init__(self, canvas: Canvas, slices: tuple[slice, slice, slice]):
        self.canvas, self.slices = canvas, slices
        self.coords = tuple(a[s] for a, s in zip(canvas.axes, slices, strict=True))
        x, y, z = self.coords
        self.p = (x[:, None, None], y[None, :, None], z[None, None, :])
        self.shape = (len(x), len(y), len(z))

    @functools.cached_property
    def q(self) -> tuple[np.ndarray, ...]:
        """Reference coordinates (mm) of the voxel centres: 3 float32 arrays of the box's shape."""
        return self.canvas.warp.apply(self.p)

    def window(self, lo: np.ndarray, hi: np.ndarray) -> tuple[slice, slice, slice] | None:
        """Slices of this box that hold the reference bounds [lo, hi], or None if none do."""
        lo, hi = self.canvas.warp.world_bounds(lo, hi)
        window = []
        for coords, a, b in zip(self.coords, lo, hi, strict=True):
            start, stop = int(np.searchsorted(coords, a)), int(np.searchsorted(coords, b, side="right"))
            if start >= stop:
                return None
            window.append(slice(start, stop))
        return window[0], window[1], window[2]

    def view(self, name: str) -> np.ndarray:
        """This block of a canvas array (``tissue``, ``label``, ``body``, ``cavity``), writable."""
        return getattr(self.canvas, name)[self.slices]

    def allowed(self, gate: str | tuple[int, ...]) -> np.ndarray:
        """Where painting may happen: inside the ``"body"``, the ``"cavity"``, or labels ``gate``."""
        if isinstance(gate, str):
            return self.view(gate)
        table = np.zeros(256, bool)
        table[list(gate)] = True
        return table[self.view("label")]

    def paint(self, mask: np.ndarray, tissue: int | np.ndarray, label: int = 0) -> None:
        """Set tissue (a value, or an array broadcastable to the box) and label where ``mask``."""
        np.copyto(self.view("tissue"), tissue, casting="unsafe", where=mask)
        np.copyto(self.view("label"), label, casting="unsafe", where=mask)


# -- shapes -------------------------------------------------------------------------------------


def _rotation(degrees: Sequence[float]) -> np.ndarray:
    """Rotation matrix Rz @ Ry @ Rx for angles (about x, about y, about z) in degrees."""
    ax, ay, az = np.radians(degrees)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


@dataclass(frozen=True)
class Ellipsoid:
    """An ellipsoid in reference mm: ``centre`` (3,), ``semi`` axes (3,), ``rotation`` (3, 3)."""

    centre: np.ndarray
    semi: np.ndarray
    rotation: np.ndarray

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Corners (reference mm) of the axis-aligned box around the ellipsoid."""
        extent = np.sqrt((self.rotation**2) @ self.semi**2)
        return self.centre - extent, self.centre + extent

    def radius(self, q: tuple[np.ndarray, ...]) -> np.ndarray:
        """Normalised radius of points ``q``: below 1 inside, 1 on the surface."""
        d = [q[i] - np.float32(self.centre[i]) for i in range(3)]
        total = None
        for j in range(3):
            r = self.rotation[:, j] / self.semi[j]
            u = d[0] * np.float32(r[0]) + d[1] * np.float32(r[1]) + d[2] * np.float32(r[2])
            total = u * u if total is None else total + u * u
        return np.sqrt(total)

    def point(self, local: np.ndarray) -> np.ndarray:
        """Reference coordinates of a point given in units of the semi axes (local frame)."""
        return self.centre + self.rotation @ (np.asarray(local) * self.semi)


def jittered_ellipsoid(
    rng: np.random.Generator,
    centre: Sequence[float],
    semi: Sequence[float],
    angles: Sequence[float] = (0, 0, 0),
    shift: float = 5.0,
    size: float = 0.1,
    turn: float = 6.0,
) -> Ellipsoid:
    """An ellipsoid near the given one: centre moved by ``shift`` mm SD, axes scaled ±``size``."""
    return Ellipsoid(
        np.asarray(centre, float) + rng.normal(0, shift, 3),
        np.asarray(semi, float) * rng.uniform(1 - size, 1 + size, 3),
        _rotation(np.asarray(angles, float) + rng.normal(0, turn, 3)),
    )


def jittered_path(
    rng: np.random.Generator,
    rows: Sequence[Sequence[float]],
    shift: float = 4.0,
    size: float = 0.1,
    step: float = 10.0,
) -> tuple[np.ndarray, np.ndarray]:
    """A smooth centreline through jittered control rows (x, y, z, radius), sampled every ``step`` mm.

    Control points move by ``shift`` mm SD and radii scale by up to ±``size``; returns the points
    (n, 3) and radii (n,) in reference mm.
    """
    rows = np.asarray(rows, float)
    points = rows[:, :3] + rng.normal(0, shift, (len(rows), 3))
    radii = rows[:, 3] * rng.uniform(1 - size, 1 + size, len(rows))
    length = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))])
    samples = np.linspace(0, length[-1], max(2, int(length[-1] / step) + 1))
    if len(points) > 2:
        curve = CubicSpline(length, points, bc_type="natural")(samples)
    else:
        curve = np.stack([np.interp(samples, length, points[:, i]) for i in range(3)], axis=1)
    return curve, np.interp(samples, length, radii)


def segment_distance(q: tuple[np.ndarray, ...], a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For points ``q``: distance (mm) to the segment a→b and position t ∈ [0, 1] along it."""
    v = b - a
    d = [q[i] - np.float32(a[i]) for i in range(3)]
    t = (d[0] * np.float32(v[0]) + d[1] * np.float32(v[1]) + d[2] * np.float32(v[2])) / np.float32(v @ v)
    np.maximum(t, 0, out=t)
    np.minimum(t, 1, out=t)
    e = [d[i] - t * np.float32(v[i]) for i in range(3)]
    return np.sqrt(e[0] * e[0] + e[1] * e[1] + e[2] * e[2]), t


@functools.cache
def drawn_class_ids() -> dict[str, int]:
    """Catalogue ids of the classes a phantom draws, keyed by lower-case catalogue name."""
    names = (
        "Spleen", "Right Kidney", "Left Kidney", "Gallbladder", "Esophagus", "Liver", "Stomach", "Aorta",
        "Inferior Vena Cava", "Portal Vein and Splenic Vein", "Pancreas", "Right Adrenal Gland",
        "Left Adrenal Gland", "Duodenum", "Hepatic Vessel", "Right Lung", "Left Lung", "Colon",
        "Intestine", "Rectum", "Bladder", "Prostate", "Left Femoral Head", "Right Femoral Head",
        "Celiac Trunk", *LESION_CLASSES,
    )  # fmt: skip
    catalog = Catalog.default()
    return {name.lower(): catalog[name].id for name in names}
