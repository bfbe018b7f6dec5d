"""Anatomy checks: rules that need no ground truth, applied to a label map on its scan's grid.

:func:`check_label_map` measures each class once (voxels, volume, centroid in patient coordinates,
whether the scan's first or last slice cuts it) and applies the rules of ``prompts/anatomy.yaml``
(:func:`load_rules`): ``side``, ``volume``, ``fragments``, ``outside_organ``, ``order``,
``truncated``, ``missing`` and ``unexpected``; :func:`check_masks` adds ``overlap`` for classes that
come as separate masks. Positions are taken in RAS+ patient coordinates through the affine, so a file
in any orientation gives the same findings. Classes the rules do not name (taught by prompt) are held
to the generic rules: fragments, lesions outside their parent organs, overlaps.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import yaml
from scipy import ndimage

from universal.catalog import Catalog, ClassKey
from universal.errors import UniversalError
from universal.masks import grown_by_one, voxel_centre
from universal.quality.findings import Finding


@dataclass(frozen=True)
class Organ:
    """One class as the label map holds it: ``voxels``, ``volume_ml``, ``centroid`` (x, y, z; RAS mm),
    its bounding ``box`` (voxel slices) and whether the first or last slice ``truncated`` it."""

    name: str
    id: int
    voxels: int
    volume_ml: float
    centroid: np.ndarray
    box: tuple[slice, ...]
    truncated: bool


@functools.cache
def _packaged_rules() -> dict:
    return yaml.safe_load(resources.files("universal.prompts").joinpath("anatomy.yaml").read_text())


def load_rules(path: str | Path | None = None) -> dict:
    """The rules' table: ``prompts/anatomy.yaml``, or a file of its layout."""
    if path is None:
        return _packaged_rules()
    try:
        return yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as error:
        raise UniversalError(f"cannot read the anatomy rules {path}: {error}") from error


def measure(label_map: np.ndarray, affine: np.ndarray, catalog: Catalog) -> dict[str, Organ]:
    """Every class present in ``label_map`` (uint8 (X, Y, Z), catalogue ids) by name."""
    voxel_ml = abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0
    cranio_caudal = int(np.argmax(np.abs(affine[2, :3])))  # the voxel axis closest to the patient's z
    last = label_map.shape[cranio_caudal] - 1
    organs = {}
    for class_id, box in enumerate(ndimage.find_objects(label_map, max_label=len(catalog)), start=1):
        if box is None:
            continue
        inside = label_map[box] == class_id
        voxels = int(np.count_nonzero(inside))
        index = voxel_centre(inside) + np.array([s.start for s in box])
        centroid = (affine @ np.append(index, 1.0))[:3]
        cut = box[cranio_caudal].start == 0 or box[cranio_caudal].stop - 1 == last
        organs[catalog[class_id].name] = Organ(catalog[class_id].name, class_id, voxels, voxels * voxel_ml,
                                               centroid, box, cut)
    return organs


def check_label_map(label_map: np.ndarray, affine: np.ndarray, catalog: Catalog,
                    classes: Iterable[ClassKey] | None = None, rules: Mapping | None = None) -> list[Finding]:
    """The findings on a label map (uint8 (X, Y, Z), catalogue ids, lesions painted over their organ)
    with its RAS+ ``affine``. ``classes``: the classes it was meant to hold (default: all), whose
    absence may be ``missing``. Findings come most severe first."""
    rules = rules or load_rules()
    if label_map.ndim != 3:
        raise UniversalError(f"a label map is a 3D volume, got shape {label_map.shape}")
    organs = measure(np.asarray(label_map), affine, catalog)
    meant = {catalog[key].name for key in catalog.select(classes)} if classes is not None else set(catalog.names)
    voxel_ml = abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0
    pieces = _lesion_pieces(label_map, catalog, organs, voxel_ml)
    findings = [*_truncated(organs), *_side(organs, rules["side"]), *_order(label_map, affine, organs, rules["order"]),
                *_volume(organs, pieces, rules["volume"]), *_fragments(label_map, organs, catalog, voxel_ml,
                                                                         rules["fragments"]),
                *_outside(pieces, rules["outside_organ"]), *_missing(organs, meant, rules["missing"]),
                *_unexpected(organs, catalog, meant)]
    return sorted(findings, key=lambda f: (-("info", "warning", "error").index(f.severity), f.code, f.classes))


def check_masks(masks: Mapping[str, np.ndarray], affine: np.ndarray, catalog: Catalog,
                rules: Mapping | None = None) -> list[Finding]:
    """The findings on classes given as separate bool masks (X, Y, Z) by name (several annotators'
    segments, a DICOM SEG): ``overlap`` of classes that exclude each other, and every check of the
    label map they paint (organs by id, then lesions over them)."""
    rules = rules or load_rules()
    voxel_ml = abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0
    allowed = {frozenset(pair) for pair in rules["overlap"].get("allowed", [])}
    findings = []
    infos = {name: catalog[name] for name in masks}
    for (first, a), (second, b) in itertools.combinations(masks.items(), 2):
        one, other = infos[first], infos[second]
        nested = (one.is_lesion and other.name in one.parents) or (other.is_lesion and one.name in other.parents)
        if nested or frozenset((one.name, other.name)) in allowed:
            continue
        shared = float(np.count_nonzero(a & b)) * voxel_ml
        if shared >= rules["overlap"]["min_ml"]:
            findings.append(Finding("overlap", (one.name, other.name), round(shared, 2), "no shared voxels", "warning",
                                    f"{one.name} and {other.name} share {shared:.1f} mL, but one organ cannot be the "
                                    "other: correct the boundary between them"))
    painted = np.zeros(next(iter(masks.values())).shape, np.uint8)
    for name in sorted(masks, key=lambda n: (infos[n].is_lesion, infos[n].id)):
        painted[masks[name]] = infos[name].id
    return [*findings, *check_label_map(painted, affine, catalog, [catalog[n].id for n in masks], rules)]


# -- the rules ------------------------------------------------------------------------------------


def _truncated(organs: Mapping[str, Organ]) -> list[Finding]:
    return [Finding("truncated", (organ.name,), organ.volume_ml, "inside the scan", "info",
                    f"{organ.name} is cut by the scan's first or last slice: it is partly outside the scan, so its "
                    "volume is not judged") for organ in organs.values() if organ.truncated]


def _side(organs: Mapping[str, Organ], rule: Mapping) -> list[Finding]:
    found, tolerance = [], float(rule["tolerance_mm"])
    midline = []
    for right, left in rule["pairs"]:
        if right in organs and left in organs:
            gap = float(organs[right].centroid[0] - organs[left].centroid[0])
            midline.append((organs[right].centroid[0] + organs[left].centroid[0]) / 2)
            if gap < 0:
                found.append(Finding("side", (right, left), round(gap, 1), "the right one to the patient's right",
                                     "error", f"{right} lies {-gap:.0f} mm to the patient's left of {left}: are the "
                                     "two labels swapped?"))
    midline += [organs[name].centroid[0] for name in rule["midline"] if name in organs]
    if not midline:
        return found
    centre = float(np.median(midline))
    for side, names, sign in (("right", rule["right"], 1), ("left", rule["left"], -1)):
        for name in names:
            if name not in organs:
                continue
            offset = sign * float(organs[name].centroid[0] - centre)  # positive: on its own side
            if offset < -tolerance:
                wrong = "left" if side == "right" else "right"
                found.append(Finding("side", (name,), round(sign * offset, 1), f"on the patient's {side}", "error",
                                     f"{name} lies on the patient's {wrong} ({-offset:.0f} mm past the midline); it "
                                     f"belongs on the {side}: is the image or the label flipped?"))
    return found


def _order(label_map, affine, organs: Mapping[str, Organ], rule: Mapping) -> list[Finding]:
    found, tolerance = [], float(rule["tolerance_mm"])
    for upper, lower in rule["above"]:
        if upper in organs and lower in organs:
            gap = float(organs[upper].centroid[2] - organs[lower].centroid[2])
            if gap < -tolerance:
                found.append(Finding("order", (upper, lower), round(gap, 1), f"{upper} above {lower}", "error",
                                     f"{lower} lies {-gap:.0f} mm above {upper}, but {upper} is above {lower} in every "
                                     "body: is one of them labelled as the other?"))
    for left, right in rule["left_of"]:
        if left in organs and right in organs:
            gap = _slice_gap(label_map, affine, organs[left], organs[right])
            if gap is not None and gap > tolerance:
                found.append(Finding("order", (left, right), round(gap, 1), f"{left} to the patient's left of {right}",
                                     "error", f"{left} lies {gap:.0f} mm to the patient's right of {right}, where it "
                                     "belongs to its left: are the two labels swapped?"))
    return found


def _slice_gap(label_map, affine, one: Organ, other: Organ) -> float | None:
    """The median, over the slices both cross, of ``one``'s x minus ``other``'s x (mm)."""
    axis = int(np.argmax(np.abs(affine[2, :3])))
    start = max(one.box[axis].start, other.box[axis].start)
    stop = min(one.box[axis].stop, other.box[axis].stop)
    gaps = []
    for k in range(start, stop):
        xs = []
        for organ in (one, other):
            box = list(organ.box)
            box[axis] = slice(k, k + 1)
            found = np.argwhere(label_map[tuple(box)] == organ.id)
            if not len(found):
                break
            index = found.mean(0) + np.array([s.start for s in box])
            xs.append(float((affine @ np.append(index, 1.0))[0]))
        if len(xs) == 2:
            gaps.append(xs[0] - xs[1])
    return float(np.median(gaps)) if gaps else None


@dataclass(frozen=True)
class _Piece:
    """A lesion's connected piece: its class, volume, and the parent organ it touches (if any)."""

    lesion: str
    volume_ml: float
    parent: str | None


def _lesion_pieces(label_map, catalog: Catalog, organs: Mapping[str, Organ], voxel_ml: float) -> list[_Piece]:
    """Each lesion class's 26-connected pieces, in the order the scan meets them, each with the first of
    its class's parent organs that a voxel of the piece touches (6-connected): found per parent organ at
    once (the pieces under the organ's mask grown by one voxel), so noise's many pieces cost no more than
    a few."""
    import cc3d

    pieces = []
    for organ in organs.values():
        info = catalog[organ.id]
        if not info.is_lesion:
            continue
        box = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in organ.box)
        region = label_map[box]
        parts, count = cc3d.connected_components(region == organ.id, connectivity=26, return_N=True)
        parents = [p for p in info.parents if p in organs]
        parent_of = np.full(count + 1, len(parents))  # index into parents; len(parents): none
        for index in reversed(range(len(parents))):  # the first parent listed wins
            touching = parts[grown_by_one(region == organs[parents[index]].id) & (parts > 0)]
            parent_of[np.unique(touching)] = index
        sizes = np.bincount(parts.ravel(), minlength=count + 1)
        named = [*parents, None]
        pieces += [_Piece(info.name, float(sizes[number]) * voxel_ml, named[parent_of[number]])
                   for number in range(1, count + 1)]
    return pieces


def _volume(organs: Mapping[str, Organ], pieces: list[_Piece], rule: Mapping) -> list[Finding]:
    found, factor = [], float(rule["factor"])
    for name, reference in rule["reference_ml"].items():
        if name not in organs or organs[name].truncated:
            continue
        low, high = reference["range"]
        volume = organs[name].volume_ml + sum(p.volume_ml for p in pieces if p.parent == name)
        if not low / factor <= volume <= high * factor:
            size = "small" if volume < low / factor else "large"
            found.append(Finding("volume", (name,), round(volume, 1), f"{low / factor:.0f}-{high * factor:.0f} mL",
                                 "warning", f"{name} measures {volume:.0f} mL, far too {size} for an adult "
                                 f"{name.lower()} ({low:.0f}-{high:.0f} mL is usual): is it labelled whole, and "
                                 "nothing else with it?", {"source": reference["source"]}))
    return found


def _fragments(label_map, organs: Mapping[str, Organ], catalog: Catalog, voxel_ml: float,
               rule: Mapping) -> list[Finding]:
    import cc3d

    found = []
    for organ in organs.values():
        if catalog[organ.id].is_lesion or organ.name in rule["exclude"]:
            continue
        lesions = [c.id for c in catalog if c.is_lesion and organ.name in c.parents]  # a tumour does not cut it
        parts = cc3d.connected_components(np.isin(label_map[organ.box], [organ.id, *lesions]), connectivity=26)
        sizes = np.bincount(parts[label_map[organ.box] == organ.id])[1:]  # each piece's own organ voxels
        large = int(np.count_nonzero(sizes >= max(rule["min_share"] * organ.voxels, rule["min_ml"] / voxel_ml)))
        if large > 1:
            found.append(Finding("fragments", (organ.name,), large, "one piece", "warning",
                                 f"{organ.name} is in {large} large pieces; it is one organ: join them, or relabel the "
                                 "piece that is something else"))
    return found


def _outside(pieces: list[_Piece], rule: Mapping) -> list[Finding]:
    found, outside = [], {}
    for piece in pieces:
        if piece.parent is None and piece.volume_ml >= rule["min_ml"]:
            outside[piece.lesion] = outside.get(piece.lesion, 0.0) + piece.volume_ml
    for lesion, volume in outside.items():
        found.append(Finding("outside_organ", (lesion,), round(volume, 2), "inside its organ", "error",
                             f"{volume:.1f} mL of {lesion} lies outside the organ it belongs to: move it into the "
                             "organ, or label it as what it is"))
    return found


def _missing(organs: Mapping[str, Organ], meant: set[str], rule: Mapping) -> list[Finding]:
    found = []
    for name, anchors in rule.items():
        if name in organs or name not in meant:
            continue
        if all(anchor in organs and not organs[anchor].truncated for anchor in anchors):
            found.append(Finding("missing", (name,), 0.0, f"present beside {' and '.join(anchors)}", "warning",
                                 f"{name} is missing although {' and '.join(anchors)} are found whole around where it "
                                 "lies: was it removed, or left out?"))
    return found


def _unexpected(organs: Mapping[str, Organ], catalog: Catalog, meant: set[str]) -> list[Finding]:
    found = []
    for organ in organs.values():
        info = catalog[organ.id]
        parents = [p for p in info.parents if p in meant]
        if info.is_lesion and parents and not any(p in organs for p in parents):
            where = " or ".join(parents)
            found.append(Finding("unexpected", (info.name,), round(organ.volume_ml, 2), f"within {where}", "error",
                                 f"{info.name} is found ({organ.volume_ml:.1f} mL) but no {where} is: the scan "
                                 "cannot hold it where its organ is not"))
    return found
