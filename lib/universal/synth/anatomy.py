"""A phantom patient's anatomy: reference centrelines, organs, vessels and bones drawn from the
anatomy seed, their painting order, and lesions placed inside their organs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from universal.synth.geometry import Canvas, Ellipsoid, Warp, drawn_class_ids, jittered_ellipsoid, jittered_path
from universal.synth.image import Tissue
from universal.synth.structures import SKIN_MM, Body, Duct, Gate, IliacWings, Ribs, Solid, Spine, Table, Thorax

# fmt: off
# Reference anatomy in mm: x to the patient's right, y to the front, z up, z = 0 near the L1-L2 disc.
# Centrelines are rows of (x, y, z, radius); paired structures are given for the patient's right.
_PSOAS = ((25, -40, 30, 5), (38, -40, -20, 11), (48, -35, -90, 20), (58, -15, -160, 20), (65, 15, -220, 15),
          (85, 38, -265, 13))
_QUADRATUS = ((62, -68, 30, 6), (66, -72, -30, 12), (70, -70, -85, 10))
_COLON = ((72, 22, -125, 28), (85, 5, -95, 25), (92, 0, -60, 24), (80, 30, -35, 23), (45, 62, -50, 22),
          (0, 66, -62, 22), (-45, 58, -45, 22), (-88, 20, -10, 22), (-100, -8, -40, 20), (-98, -10, -100, 20),
          (-82, 5, -140, 19), (-45, 35, -160, 18), (-10, 30, -180, 18), (5, -5, -195, 18))
_RECTUM = ((5, -5, -195, 18), (0, -35, -215, 20), (0, -38, -250, 20), (0, -32, -285, 14), (0, -28, -310, 9))
_DUODENUM = ((15, 58, 12, 11), (35, 45, 5, 13), (52, 25, -5, 12), (55, 15, -30, 12), (52, 10, -55, 12),
             (35, 15, -65, 12), (5, 18, -68, 11), (-25, 18, -55, 11), (-38, 20, -35, 11))
_STOMACH = ((-58, -5, 82, 30), (-60, 8, 58, 33), (-52, 30, 32, 28), (-35, 50, 18, 22), (-5, 63, 14, 16),
            (15, 58, 12, 11))
_PANCREAS = ((15, 12, -30, 9), (30, 25, -15, 15), (5, 42, 5, 11), (-30, 32, 12, 11), (-60, 12, 20, 10),
             (-82, -10, 28, 9))
_HEPATIC_VESSELS = (((20, -5, 80, 6), (110, -15, 55, 2.5)), ((20, -5, 80, 6), (60, 45, 45, 2.5)),
                    ((20, -5, 80, 6), (-25, 45, 65, 2.5)),
                    ((45, 15, 40, 6), (100, 0, 30, 4), (115, -20, 10, 2.5)),
                    ((45, 15, 40, 6), (10, 40, 45, 4), (-30, 55, 55, 2.5)))
_PORTAL_SPLENIC = ((-88, -28, 32, 5), (-78, -18, 26, 5.5), (-50, 5, 18, 5.5), (-20, 22, 12, 6),
                   (10, 26, 6, 7), (28, 22, 25, 7), (45, 15, 40, 7))
_IVC = ((18, -12, -88, 10), (22, -3, -40, 12), (22, -3, 10, 12), (20, -5, 50, 13), (18, -3, 85, 13),
        (5, 15, 110, 13))
_AORTA = ((-28, -22, 260, 12), (-28, -22, 100, 12), (-15, -8, 45, 11.5), (-12, 0, 0, 11), (-10, 2, -75, 10),
          (-10, 0, -85, 9))
_RENAL_VEINS = (((-45, -30, 2, 5), (-25, 5, 0, 4.5), (-12, 16, 0, 4), (18, 0, -2, 5)),
                ((50, -30, -8, 5), (28, -8, -8, 5)))
_SMA = ((-12, 8, 22, 4), (-8, 22, 5, 4), (-4, 32, -40, 3.5), (0, 38, -80, 3))
_CELIAC = ((-13, 8, 36, 4), (-11, 18, 36, 4), (-9, 28, 34, 3.5))
_ILIAC_ARTERY = ((-10, 0, -85, 8), (30, 0, -125, 7), (55, 10, -175, 6), (75, 25, -230, 5.5),
                 (80, 38, -275, 5))
_ILIAC_VEIN = ((18, -12, -88, 9), (25, -12, -125, 8), (60, -2, -180, 7), (74, 22, -235, 6.5),
               (78, 32, -275, 6))
_ESOPHAGUS = ((-5, -15, 260, 8), (-8, -10, 110, 8), (-20, 2, 78, 8), (-35, 12, 65, 9), (-48, 15, 60, 10))
_SPINE = {"knots": (-400, -290, -200, -140, -80, 0, 60, 300),
          "centre_y": (-75, -82, -70, -52, -38, -35, -40, -45),
          "radius": (16, 16, 22, 24, 23, 22, 18, 16)}
_BODY_KNOTS = (-420.0, -250.0, -170.0, -90.0, 0.0, 90.0, 260.0)
_BODY_WIDTH = (150, 150, 140, 130, 132, 138, 140)
_BODY_FRONT = (85, 85, 86, 90, 92, 95, 95)
_BODY_BACK = 100.0
# fmt: on


def _mirror(rows: Sequence[Sequence[float]], side: int, keep: int = 0) -> np.ndarray:
    """Centreline rows for one side: x times ``side``, except for the first ``keep`` rows."""
    rows = np.array(rows, float)
    rows[keep:, 0] *= side
    return rows


@dataclass(frozen=True)
class _Anatomy:
    """Everything drawn from the anatomy seed: the warp, the painting steps in order, and the organs
    that lesions are placed in (reference space)."""

    warp: Warp
    steps: list
    liver: tuple[Ellipsoid, ...]
    kidneys: tuple[Ellipsoid, Ellipsoid]
    pancreas: np.ndarray


def plan(rng: np.random.Generator) -> _Anatomy:
    """Draw a patient: build, organs and their order of painting (later steps overwrite earlier)."""
    warp = Warp(rng)
    body = _body(rng)
    table = Table(-float(body.back.max() * warp.scale[1] + 0.6 * body.fat + SKIN_MM + 1))
    thorax = _thorax(rng)
    muscles = _muscles(rng)
    bowel = _bowel(rng)
    organs, liver, kidneys, pancreas = _organs(rng)
    vessels = _vessels(rng)
    bones = _bones(rng, body)
    steps = [table, body, thorax, *muscles, *bowel, *organs, *vessels, *bones]
    return _Anatomy(warp, steps, liver, kidneys, pancreas)


def _body(rng: np.random.Generator) -> Body:
    """The patient's build: muscle wall outline, wall thickness and subcutaneous fat."""
    width = np.array(_BODY_WIDTH, float) * rng.uniform(0.9, 1.1)
    depth = rng.uniform(0.9, 1.1)
    front, back = np.array(_BODY_FRONT, float) * depth, np.full(len(_BODY_KNOTS), _BODY_BACK * depth)
    return Body(_BODY_KNOTS, width, front, back, fat=rng.uniform(6, 40), wall=rng.uniform(8, 14))


def _thorax(rng: np.random.Generator) -> Thorax:
    """Heights of the diaphragm's domes, and the heart."""
    domes = np.array([[55, -5, 108], [-55, -10, 98]]) + rng.normal(0, [6, 4, 7], (2, 3))
    heart = jittered_ellipsoid(rng, (-22, 30, 150), (62, 55, 62), (0, 0, 25))
    return Thorax(domes, heart, (-8.0, -30.0, 30.0, 58.0))


def _muscles(rng: np.random.Generator) -> list:
    """Paraspinal, gluteal, psoas and quadratus lumborum muscles of both sides."""
    muscle = ((1, Tissue.MUSCLE),)
    steps: list = []
    for side in (1, -1):
        steps += [
            Solid(jittered_ellipsoid(rng, (35 * side, -75, -60), (30, 24, 600), shift=3), muscle, 0, "body"),
            Solid(jittered_ellipsoid(rng, (95 * side, -62, -205), (55, 40, 80), (0, 0, 20 * side)), muscle, 0, "body"),
            Duct(*jittered_path(rng, _mirror(_PSOAS, side), shift=2), 0, Tissue.MUSCLE, Tissue.MUSCLE, gate="body"),
            Duct(*jittered_path(rng, _mirror(_QUADRATUS, side), shift=2), 0, Tissue.MUSCLE, Tissue.MUSCLE, gate="body"),
        ]
    return steps


def _gas_levels(rng: np.random.Generator, points: np.ndarray, radii: np.ndarray, chance: float) -> np.ndarray:
    """Per segment of a bowel loop, the height (reference y) above which its lumen holds gas."""
    centre = (points[:-1, 1] + points[1:, 1]) / 2
    radius = (radii[:-1] + radii[1:]) / 2
    has_gas = rng.random(len(centre)) < chance
    level = centre + radius * rng.uniform(-0.2, 0.6, len(centre))
    return np.where(has_gas, level, np.inf)


def _bowel(rng: np.random.Generator) -> list:
    """Small intestine, colon, rectum, duodenum and stomach, in that order of painting."""
    ids = drawn_class_ids()
    small = jittered_path(rng, _small_bowel(rng), shift=2, size=0.0, step=8)
    colon, rectum, duodenum, stomach = (jittered_path(rng, rows) for rows in (_COLON, _RECTUM, _DUODENUM, _STOMACH))
    stomach_gas = np.full(len(stomach[0]) - 1, rng.uniform(15, 55))
    wall, fluid = Tissue.GUT_WALL, Tissue.GUT_FLUID
    return [
        Duct(*small, 2.5, wall, fluid, ids["intestine"], gas=_gas_levels(rng, *small, 0.15)),
        Duct(*colon, 3, wall, Tissue.STOOL, ids["colon"], gas=_gas_levels(rng, *colon, 0.6)),
        Duct(*rectum, 3, wall, Tissue.STOOL, ids["rectum"], gas=_gas_levels(rng, *rectum, 0.4)),
        Duct(*duodenum, 3, wall, fluid, ids["duodenum"], gas=_gas_levels(rng, *duodenum, 0.3)),
        Duct(*stomach, 5, wall, fluid, ids["stomach"], gas=stomach_gas),
    ]


def _small_bowel(rng: np.random.Generator) -> np.ndarray:
    """Centreline rows of the small bowel: from the duodenojejunal flexure, back and forth along a
    front and a back lane at each of seven heights, to the caecum."""
    rows = [(-38.0, 20.0, -35.0, 12.0)]
    for n, z in enumerate((-25, -47, -70, -93, -116, -138, -158)):
        x0, x1 = (-75, -25) if n == 0 else (-62, 58)
        for lane, sweep in ((46, (x0, x1)), (16, (x1, x0))):
            phase = rng.uniform(0, 2 * np.pi)
            for m, x in enumerate(np.linspace(*sweep, 6)):
                rows.append((x, lane + 8 * np.sin(1.3 * m + phase), z + rng.normal(0, 3), 12.0))
    rows.append((72.0, 22.0, -125.0, 12.0))
    return np.array(rows)


def _organs(rng: np.random.Generator) -> tuple:
    """Solid organs in order of painting, and the liver lobes, kidneys and pancreas for lesions."""
    ids = drawn_class_ids()
    pancreas = jittered_path(rng, _PANCREAS, shift=3)
    liver = (
        jittered_ellipsoid(rng, (75, -5, 55), (55, 80, 60)),
        jittered_ellipsoid(rng, (100, -15, 15), (30, 50, 45)),
        jittered_ellipsoid(rng, (0, 50, 62), (60, 35, 28), (0, 0, -10)),
        jittered_ellipsoid(rng, (18, -22, 55), (18, 18, 25), shift=2),
    )
    gallbladder = jittered_ellipsoid(rng, (62, 55, -5), (16, 18, 38), (35, 0, 0))
    spleen = jittered_ellipsoid(rng, (-88, -40, 48), (20, 52, 45), (0, 0, 35))
    steps: list = [Duct(*pancreas, 0, Tissue.PANCREAS, Tissue.PANCREAS, ids["pancreas"])]
    steps += [Solid(lobe, ((1, Tissue.LIVER),), ids["liver"]) for lobe in liver]
    steps += [
        Solid(gallbladder, ((1, Tissue.GUT_WALL), (1 - 2 / 16, Tissue.BILE)), ids["gallbladder"]),
        Solid(spleen, ((1, Tissue.SPLEEN),), ids["spleen"]),
    ]
    kidneys = []
    for side, name, z in ((1, "right", -12), (-1, "left", 3)):
        kidney, kidney_steps = _kidney(rng, side, z, ids[f"{name} kidney"])
        height = 60 if side > 0 else 51
        adrenal = jittered_ellipsoid(rng, (32 * side, -30, height), (4.5, 13, 18), (0, 0, -20 * side), shift=3)
        steps += [*kidney_steps, Solid(adrenal, ((1, Tissue.ADRENAL),), ids[f"{name} adrenal gland"])]
        kidneys.append(kidney)
    bladder = jittered_ellipsoid(rng, (0, 40, -228), (48, 38, 35), size=0.2)
    prostate = jittered_ellipsoid(rng, (0, 25, -282), (20, 16, 17), shift=3)
    steps += [
        Solid(bladder, ((1, Tissue.MUSCLE), (1 - 3 / 35, Tissue.URINE)), ids["bladder"]),
        Solid(prostate, ((1, Tissue.PROSTATE),), ids["prostate"]),
    ]
    return steps, liver, tuple(kidneys), pancreas[0]


def _kidney(rng: np.random.Generator, side: int, z: float, label: int) -> tuple[Ellipsoid, list]:
    """One kidney: cortex and medulla, with sinus fat and renal pelvis towards its hilum."""
    kidney = jittered_ellipsoid(rng, (68 * side, -40, z), (24, 19, 54), (10, -12 * side, -30 * side), size=0.08)
    hilum = kidney.rotation @ np.array([-side, 0, 0])
    sinus = Ellipsoid(kidney.centre + 11 * hilum, np.array([11, 9, 28]), kidney.rotation)
    pelvis = Ellipsoid(kidney.centre + 17 * hilum, np.array([6, 6, 12]), kidney.rotation)
    return kidney, [
        Solid(kidney, ((1, Tissue.KIDNEY_CORTEX), (0.72, Tissue.KIDNEY_MEDULLA)), label),
        Solid(sinus, ((1, Tissue.SINUS_FAT),), label, (label,)),
        Solid(pelvis, ((1, Tissue.URINE),), label, (label,)),
    ]


def _vessels(rng: np.random.Generator) -> list:
    """Vessels, in order of painting: hepatic vessels (inside the liver), veins, arteries, esophagus."""
    ids = drawn_class_ids()

    def tube(rows: Sequence, tissue: int, label: int = 0, gate: Gate = "cavity", shift: float = 2.0) -> Duct:
        return Duct(*jittered_path(rng, rows, shift=shift), 0, tissue, tissue, label, gate)

    steps = [tube(rows, Tissue.PORTAL, ids["hepatic vessel"], (ids["liver"],), 4) for rows in _HEPATIC_VESSELS]
    steps += [
        tube(_PORTAL_SPLENIC, Tissue.PORTAL, ids["portal vein and splenic vein"]),
        *(tube(rows, Tissue.VEIN) for rows in _RENAL_VEINS),
        tube(_IVC, Tissue.VEIN, ids["inferior vena cava"], "body"),
        tube(_AORTA, Tissue.ARTERY, ids["aorta"], "body"),
        tube(_SMA, Tissue.ARTERY),
        tube(_CELIAC, Tissue.ARTERY, ids["celiac trunk"], shift=1.5),
    ]
    for side in (1, -1):
        steps.append(tube(_mirror(_ILIAC_ARTERY, side, keep=1), Tissue.ARTERY))
        steps.append(tube(_mirror(_ILIAC_VEIN, side, keep=1), Tissue.VEIN))
    steps.append(Duct(*jittered_path(rng, _ESOPHAGUS, shift=2), 5, Tissue.MUSCLE, Tissue.GAS, ids["esophagus"], "body"))
    return steps


def _bones(rng: np.random.Generator, body: Body) -> list:
    """Spine, ribs, pelvis and femurs; the femoral heads are labelled."""
    ids = drawn_class_ids()
    steps: list = [
        Spine(**_SPINE, pitch=rng.uniform(31, 35), phase=rng.uniform(-8, 0), sacrum=-140 + rng.normal(0, 5)),
        Ribs(body, pitch=rng.uniform(26, 30), phase=rng.uniform(0, 28), xiphoid=70 + rng.normal(0, 8)),
        IliacWings(-92 + rng.normal(0, 5), -222.0, (125 * rng.uniform(0.92, 1.08), 82.0), 70.0),
    ]
    for side, name in ((1, "right"), (-1, "left")):
        centre = np.array([88.0 * side, 5, -252]) + rng.normal(0, 3, 3)
        steps += _hip(rng, side, centre, 24 * rng.uniform(0.9, 1.1), ids[f"{name} femoral head"])
    return steps


def _hip(rng: np.random.Generator, side: int, centre: np.ndarray, radius: float, label: int) -> list:
    """Acetabulum, pubic ramus, ischium, femoral neck and shaft, joint cartilage, and the femoral head."""

    def bone(rows: Sequence) -> Duct:
        return Duct(*jittered_path(rng, rows, shift=2), 3.5, Tissue.CORTICAL, Tissue.CANCELLOUS, gate="body")

    def near(dx: float, dy: float, dz: float, r: float) -> tuple[float, ...]:
        """A centreline row at an offset from the head's centre, ``dx`` towards the side."""
        return (*(centre + np.array([dx * side, dy, dz])), r)

    acetabulum = Ellipsoid(np.array(near(-10, 0, 8, 0)[:3]), np.array([30.0, 36, 36]), np.eye(3))
    socket = Ellipsoid(centre, np.full(3, radius + 2.5), np.eye(3))
    head = Ellipsoid(centre, np.full(3, radius), np.eye(3))
    return [
        Solid(acetabulum, ((1, Tissue.CORTICAL), (0.85, Tissue.CANCELLOUS)), gate="body"),
        bone([near(-15, 30, -10, 10), (8 * side, 62, -275, 9)]),
        bone([near(-5, -20, -10, 13), near(-25, -30, -60, 12)]),
        bone([near(0, 0, 0, 15), near(35, -6, -28, 15), near(30, 2, -170, 14)]),
        Solid(socket, ((1, Tissue.CARTILAGE),), gate="body"),
        Solid(head, ((1, Tissue.CORTICAL), (1 - 2.5 / radius, Tissue.CANCELLOUS)), label, "body"),
    ]


# -- lesions ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Lesion:
    """A lesion: an ellipsoid painted only over its organ's labels ``within``."""

    shape: Ellipsoid
    tissue: int
    label: int
    within: tuple[int, ...]

    def paint(self, canvas: Canvas) -> None:
        Solid(self.shape, ((1, self.tissue),), self.label, self.within).paint(canvas)


def _lesion_in(rng: np.random.Generator, organ: Ellipsoid, radius: tuple[float, float]) -> Ellipsoid:
    """A lesion centred well inside ``organ``, of radius in ``radius`` (mm), slightly irregular."""
    direction = rng.normal(size=3)
    local = direction / np.linalg.norm(direction) * rng.uniform(0, 0.5)
    size = rng.uniform(*radius)
    return jittered_ellipsoid(rng, organ.point(local), (size,) * 3, rng.uniform(0, 180, 3), shift=0, size=0.2, turn=0)


def plan_lesions(rng: np.random.Generator, anatomy: _Anatomy) -> list[_Lesion]:
    """All lesions a patient may carry; the same draws whichever of them are painted."""
    ids = drawn_class_ids()
    liver = (ids["liver"], ids["hepatic vessel"])
    lesions = []
    count = rng.integers(1, 4)
    for n in range(3):
        lobe = anatomy.liver[int(rng.random() < 0.3) * 2]
        shape = _lesion_in(rng, lobe, (7, 22))
        tissue = Tissue.LESION_HYPO if rng.random() < 0.7 else Tissue.LESION_HYPER
        if n < count:
            lesions.append(_Lesion(shape, tissue, ids["liver tumor"], liver))
    tumour_side, cyst_side = rng.integers(0, 2, 2)
    kidney_ids = (ids["right kidney"], ids["left kidney"])
    lesions.append(_Lesion(_lesion_in(rng, anatomy.kidneys[tumour_side], (10, 20)), Tissue.RENAL_TUMOUR,
                           ids["kidney tumor"], (kidney_ids[tumour_side],)))  # fmt: skip
    lesions.append(_Lesion(_lesion_in(rng, anatomy.kidneys[cyst_side], (6, 14)), Tissue.CYST, ids["kidney cyst"],
                           (kidney_ids[cyst_side],)))  # fmt: skip
    path = anatomy.pancreas
    centre = path[int(rng.uniform(0.1, 0.9) * (len(path) - 1))]
    size = rng.uniform(9, 15)
    shape = jittered_ellipsoid(rng, centre, (size, size, size), rng.uniform(0, 180, 3), shift=2, size=0.2, turn=0)
    tissue = Tissue.LESION_HYPO if rng.random() < 0.8 else Tissue.LESION_HYPER
    lesions.append(_Lesion(shape, tissue, ids["pancreas tumor"], (ids["pancreas"],)))
    return lesions
