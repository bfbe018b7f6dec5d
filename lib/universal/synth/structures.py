"""The structures a phantom is painted from: layered solids, ducts (vessels, bowel), the body wall,
the table, the thorax and the bones."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from universal.synth.geometry import Box, Canvas, Ellipsoid, drawn_class_ids, segment_distance
from universal.synth.image import Tissue

SKIN_MM = 2.5


Gate = str | tuple[int, ...]


@dataclass(frozen=True)
class Solid:
    """An ellipsoid painted in layers: ``(normalised radius, tissue)``, outermost first."""

    shape: Ellipsoid
    layers: tuple[tuple[float, int], ...]
    label: int = 0
    gate: Gate = "cavity"

    def paint(self, canvas: Canvas) -> None:
        for box in canvas.boxes(*self.shape.bounds()):
            radius = self.shape.radius(box.q)
            allowed = box.allowed(self.gate)
            for limit, tissue in self.layers:
                box.paint((radius <= limit) & allowed, tissue, self.label)


@dataclass(frozen=True)
class Duct:
    """A tube along a centreline: a wall and a lumen, gas in the lumen above a height per segment.

    ``points`` (n, 3) and ``radii`` (n,) in reference mm; ``gas`` (n - 1,): per segment, the
    reference y (mm) above which the lumen holds gas (``inf``: none). ``wall`` 0 paints ``lumen`` only.
    """

    points: np.ndarray
    radii: np.ndarray
    wall: float
    wall_tissue: int
    lumen: int
    label: int = 0
    gate: Gate = "cavity"
    gas: np.ndarray | None = None

    def paint(self, canvas: Canvas) -> None:
        reach = self.radii.max()
        for box in canvas.boxes(self.points.min(axis=0) - reach, self.points.max(axis=0) + reach):
            depth, nearest = self._depth(box)
            mask = (depth >= 0) & box.allowed(self.gate)
            if not mask.any():
                continue
            tissue = np.full(box.shape, self.wall_tissue if self.wall > 0 else self.lumen, np.uint8)
            lumen = depth >= self.wall
            tissue[lumen] = self.lumen
            if self.gas is not None:
                tissue[lumen & (box.q[1] > self.gas[nearest].astype(np.float32))] = Tissue.GAS
            box.paint(mask, tissue, self.label)

    def _depth(self, box: Box) -> tuple[np.ndarray, np.ndarray]:
        """Depth (mm) under the tube's surface (negative outside) and index of the nearest segment."""
        depth = np.full(box.shape, -np.inf, np.float32)
        nearest = np.zeros(box.shape, np.int16)
        for n in range(len(self.points) - 1):
            a, b, ra, rb = self.points[n], self.points[n + 1], self.radii[n], self.radii[n + 1]
            window = box.window(np.minimum(a, b) - max(ra, rb), np.maximum(a, b) + max(ra, rb))
            if window is None:
                continue
            distance, t = segment_distance(tuple(c[window] for c in box.q), a, b)
            inside = ra + t * np.float32(rb - ra) - distance
            current = depth[window]
            better = inside > current
            current[better] = inside[better]
            nearest[window][better] = n
        return depth, nearest


def _profile(knots: Sequence[float], values: Sequence[float], z: np.ndarray) -> np.ndarray:
    """``values`` at heights ``z`` (mm), linear between ``knots``, as float32 of ``z``'s shape."""
    return np.interp(z, knots, values).astype(np.float32)


@dataclass(frozen=True)
class Body:
    """Body outline at the outer surface of the muscle wall, then subcutaneous fat and skin.

    ``knots`` z (reference mm); ``width``, ``front``, ``back``: half width (x), front and back
    distance (y) of the muscle wall at those heights; ``fat``, ``wall``: thicknesses in mm.
    """

    knots: tuple[float, ...]
    width: np.ndarray
    front: np.ndarray
    back: np.ndarray
    fat: float
    wall: float

    def reach(self) -> float:
        """Distance (mm) from the body axis that holds the whole body at any height."""
        return float(max(self.width.max(), self.front.max(), self.back.max()) + self.fat + 2 * SKIN_MM)

    def depth(self, box: Box) -> np.ndarray:
        """Depth (mm) under the outer surface of the muscle wall, along the ray from the body axis."""
        qx, qy, _ = box.q
        z = box.p[2] / np.float32(box.canvas.warp.scale[2])
        a = _profile(self.knots, self.width, z)
        b = np.where(qy > 0, _profile(self.knots, self.front, z), _profile(self.knots, self.back, z))
        rho = np.sqrt(qx * qx + qy * qy)
        scaled = np.maximum(np.sqrt((qx / a) ** 2 + (qy / b) ** 2), 1e-6)
        return rho / scaled - rho

    def paint(self, canvas: Canvas) -> None:
        reach = self.reach()
        for box in canvas.boxes((-reach, -reach, -np.inf), (reach, reach, np.inf)):
            depth = self.depth(box)
            fat = np.where(box.q[1] < 0, np.float32(0.6 * self.fat), np.float32(self.fat))
            body = depth > -(fat + SKIN_MM)
            tissue = np.full(box.shape, Tissue.SKIN, np.uint8)
            tissue[depth > -fat] = Tissue.FAT
            tissue[depth > 0] = Tissue.MUSCLE
            tissue[depth > self.wall] = Tissue.VISCERAL_FAT
            box.paint(body, tissue)
            box.view("body")[...] = body
            box.view("cavity")[...] = depth > self.wall


@dataclass(frozen=True)
class Table:
    """The scanner table under the patient's back, at world height ``top`` (mm)."""

    top: float

    def paint(self, canvas: Canvas) -> None:
        for box in canvas.boxes((-230, self.top - 12, -np.inf), (230, self.top, np.inf), world=True):
            box.paint(np.ones(box.shape, bool), Tissue.TABLE)


@dataclass(frozen=True)
class Thorax:
    """Diaphragm, lungs, heart and mediastinum above the two domes of the diaphragm.

    ``domes`` (2, 3): apex (x, y, z) of the right and left dome, reference mm; ``heart``;
    ``mediastinum``: ellipse (centre x, centre y, half width, half depth) in the axial plane kept
    free of lung behind the heart, around the spine, aorta and esophagus.
    """

    domes: np.ndarray
    heart: Ellipsoid
    mediastinum: tuple[float, float, float, float]

    def diaphragm(self, qx: np.ndarray, qy: np.ndarray) -> np.ndarray:
        """Height (reference z, mm) of the diaphragm's upper surface above (x, y)."""
        heights = []
        for ax, ay, az in self.domes:
            dy = (qy - np.float32(ay)) / 100
            dx = (qx - np.float32(ax)) / 100
            heights.append(np.float32(az) - 50 * dx * dx - np.where(dy < 0, np.float32(70), np.float32(35)) * dy * dy)
        return np.maximum(*heights)

    def paint(self, canvas: Canvas) -> None:
        ids = drawn_class_ids()
        mx, my, hw, hd = self.mediastinum
        for box in canvas.boxes((-300, -300, self.domes[:, 2].min() - 120), (300, 300, np.inf)):
            qx, qy, qz = box.q
            cavity = box.view("cavity")
            height = qz - self.diaphragm(qx, qy)
            above = cavity & (height > 0)
            thorax = above & (height > 5)
            box.paint(above, Tissue.MUSCLE)
            box.paint(thorax, Tissue.VISCERAL_FAT)
            heart = np.full(box.shape, np.inf, np.float32)
            window = box.window(*self.heart.bounds())
            if window is not None:
                heart[window] = self.heart.radius(tuple(c[window] for c in box.q))
            lung = thorax & (heart > 1.12) & (((qx - mx) / hw) ** 2 + ((qy - my) / hd) ** 2 > 1)
            box.paint(lung & (qx >= mx), Tissue.LUNG, ids["right lung"])
            box.paint(lung & (qx < mx), Tissue.LUNG, ids["left lung"])
            box.paint(thorax & (heart <= 1), Tissue.MYOCARDIUM)
            box.paint(thorax & (heart <= 0.8), Tissue.BLOOD)
            cavity[above] = False


@dataclass(frozen=True)
class Spine:
    """Vertebrae with discs and canal above the sacrum; the sacrum and coccyx below ``sacrum`` (z)."""

    knots: tuple[float, ...]
    centre_y: tuple[float, ...]
    radius: tuple[float, ...]
    pitch: float
    phase: float
    sacrum: float

    def paint(self, canvas: Canvas) -> None:
        for box in canvas.boxes((-80, -140, -np.inf), (80, 20, np.inf)):
            qx, qy, qz = box.q
            z = box.p[2] / np.float32(box.canvas.warp.scale[2])
            yv, rv = _profile(self.knots, self.centre_y, z), _profile(self.knots, self.radius, z)
            level = np.mod((qz - self.phase) / self.pitch, 1.0)
            disc = level < 8 / self.pitch
            spine = z > self.sacrum
            body = (qx / (1.1 * rv)) ** 2 + ((qy - yv) / (0.85 * rv)) ** 2
            canal_y = yv - 0.85 * rv - 11
            canal = qx**2 + (qy - canal_y) ** 2
            middle = (level > 0.35) & (level < 0.8)
            arch = (canal <= 17**2) | middle & (
                (np.abs(qx) < 4.5) & (qy < canal_y - 12) & (qy > canal_y - 40)
                | (np.abs(qx) < 38) & (np.abs(qy - canal_y - 4) < 5)
            )
            width = np.interp(z, (-290, self.sacrum), (12, 52)).astype(np.float32)
            sacrum = ~spine & ((qx / width) ** 2 + ((qy - yv) / 20) ** 2 <= 1)
            box.paint((spine & (body <= 1) | sacrum), Tissue.CORTICAL)
            marrow = spine & (body <= (1 - 2.5 / rv) ** 2) | sacrum & (np.abs(qx) < width - 3)
            box.paint(marrow, Tissue.CANCELLOUS)
            box.paint(spine & disc & (body <= 1), Tissue.DISC)
            box.paint(spine & ~disc & arch & (canal > 10**2), Tissue.CANCELLOUS)
            box.paint(spine & (canal <= 10**2) | ~spine & (z > -260) & (canal <= 6**2), Tissue.CSF)


@dataclass(frozen=True)
class Ribs:
    """Ribs, costal cartilage and sternum in the chest wall of ``body``."""

    body: Body
    pitch: float
    phase: float
    xiphoid: float

    def paint(self, canvas: Canvas) -> None:
        reach = self.body.reach()
        for box in canvas.boxes((-reach, -reach, -40), (reach, reach, np.inf)):
            depth = self.body.depth(box)
            shell = (depth > self.body.wall - 4) & (depth < self.body.wall + 6) & box.view("body")
            if not shell.any():
                continue
            qx, qy, qz = (np.broadcast_to(a, box.shape)[shell] for a in box.q)
            front = qy / np.maximum(np.sqrt(qx * qx + qy * qy), 1e-3)
            lowest = 25 + 10 * front - 40 * (1 - front * front)
            pattern = np.mod((qz + 45 * (front + 1) / 2 - self.phase) / self.pitch, 1.0) < 10 / self.pitch
            rib = (qz > lowest) & pattern & (front < 0.93)
            sternum = (front >= 0.93) & (qz > self.xiphoid) & (np.abs(qx) < 18)
            tissue = np.where(front > 0.64, Tissue.CARTILAGE, Tissue.CANCELLOUS).astype(np.uint8)
            tissue[sternum] = Tissue.CANCELLOUS
            mask = np.zeros(box.shape, bool)
            values = np.zeros(box.shape, np.uint8)
            mask[shell] = rib | sternum
            values[shell] = tissue
            box.paint(mask, values)


@dataclass(frozen=True)
class IliacWings:
    """The iliac bones as a curved shell around the pelvic inlet between ``top`` and ``bottom`` (z)."""

    top: float
    bottom: float
    half_width: tuple[float, float]
    depth: float

    def paint(self, canvas: Canvas) -> None:
        wide = max(self.half_width)
        for box in canvas.boxes((-wide - 10, -120, self.bottom), (wide + 10, 60, self.top)):
            qx, qy, qz = box.q
            z = box.p[2] / np.float32(box.canvas.warp.scale[2])
            a = _profile((self.bottom, self.top), self.half_width, z)
            cy = np.float32(-15)
            rho = np.sqrt(qx * qx + (qy - cy) ** 2)
            scaled = np.maximum(np.sqrt((qx / a) ** 2 + ((qy - cy) / self.depth) ** 2), 1e-6)
            inside = rho / scaled - rho
            front = (qy - cy) / np.maximum(rho, 1e-3)
            shell = (inside > 0) & (inside < 9) & (front > -0.8) & (front < 0.35)
            shell &= (qz > self.bottom) & (qz < self.top) & box.view("body")
            box.paint(shell, Tissue.CORTICAL)
            box.paint(shell & (inside > 2.5) & (inside < 6.5), Tissue.CANCELLOUS)
