"""Cases in model space and the training crops drawn from them.

:class:`PreparedCases` reads each case of a datalist once (scan and label brought to model space,
the left-side mask for datasets that draw right/left pairs as one value) and builds its per-class
targets; training crops and validation (:mod:`universal.training.metrics`) both read cases through
it. :class:`CropSampler` draws a batch for (step, micro-batch, process) from a generator seeded by
those numbers, so a resumed run samples what an uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from universal.catalog import Catalog
from universal.io.labels import read_label_map
from universal.io.scans import GRID_TOLERANCE_MM, read_scan
from universal.nets.model import InputSpec
from universal.training.datasets import DataError, Datalist, DatasetTemplate
from universal.training.targets import PartialLabelTargetd, left_side_mask


class PreparedCases:
    """Datalist cases read once into model space and kept in memory.

    ``templates``: the datasets' templates; ``catalog``: the classes whose targets are built (every
    class a template names must be in it).
    """

    def __init__(self, templates: Mapping[str, DatasetTemplate], catalog: Catalog, spec: InputSpec):
        self.templates = dict(templates)
        self.catalog = catalog
        self.spec = spec
        self.targets = PartialLabelTargetd(catalog, self.templates)
        self._cache: dict[tuple[str, str], dict] = {}

    def prepared(self, case: Mapping) -> dict:
        """``image`` (1, X, Y, Z) float32 in 0..1, ``label`` (1, X, Y, Z) uint8 in the dataset's values,
        ``dataset``, and ``left`` (1, X, Y, Z) bool for templates with right/left pairs."""
        key = (case["image"], case["label"])
        if key not in self._cache:
            self._cache[key] = self._load(case)
        return self._cache[key]

    def with_targets(self, case: Mapping) -> dict:
        """``image`` (1, X, Y, Z), ``target`` (K, X, Y, Z) uint8 and ``annotated`` (K,) bool of a case."""
        return self.targets(self.prepared(case))

    def _load(self, case: Mapping) -> dict:
        from monai.data import MetaTensor

        from universal.inference.preprocess import preprocessing

        image = read_scan(case["image"])
        label, label_affine = read_label_map(case["label"])
        if image.shape != label.shape or not np.allclose(image.affine, label_affine, atol=GRID_TOLERANCE_MM):
            raise DataError(f"{case['label']} does not lie on the grid of {case['image']} (shape or affine differ)")
        affine = torch.as_tensor(image.affine, dtype=torch.float64)
        data = {
            "image": MetaTensor(torch.from_numpy(image.image.astype(np.float32))[None], affine=affine),
            "label": MetaTensor(torch.from_numpy(label)[None], affine=affine),
        }
        data = preprocessing(self.spec, label_keys=["label"])(data)
        out = {
            "image": data["image"].as_tensor().float(),
            "label": data["label"].as_tensor().round().to(torch.uint8),
            "dataset": case["dataset"],
        }
        template = self.templates[case["dataset"]]
        if template.has_pairs:
            left = left_side_mask(out["label"][0].numpy(), out["image"][0].numpy(), template, self.catalog)
            out["left"] = torch.from_numpy(left)[None]
        return out


class CropSampler:
    """Training crops of a datalist's training cases.

    Item n of the run takes dataset n mod D (uniform across datasets), a random case of it, and a
    random crop of ``crop`` voxels centred as :func:`crop_centre_ratios` says.
    """

    def __init__(self, datalist: Datalist, cases: PreparedCases, crop: Sequence[int], *, seed: int, accumulate: int):
        self.cases = cases
        self.crop = tuple(int(c) for c in crop)
        self.seed = seed
        self.accumulate = accumulate
        self.training = datalist.training
        self.datasets = sorted({case["dataset"] for case in self.training})
        self.by_dataset = {name: [c for c in self.training if c["dataset"] == name] for name in self.datasets}

    def batch(self, step: int, micro: int, rank: int, world: int, size: int) -> dict[str, torch.Tensor]:
        """``image`` (B, 1, *crop) float32, ``target`` (B, K, *crop) uint8, ``annotated`` (B, K) bool."""
        items = []
        for index in range(size):
            item = ((step * self.accumulate + micro) * world + rank) * size + index
            rng = np.random.default_rng([self.seed, step, micro, rank, index])
            dataset = self.datasets[item % len(self.datasets)]
            case = self.by_dataset[dataset][int(rng.integers(len(self.by_dataset[dataset])))]
            items.append(self._crop(self.cases.prepared(case), rng))
        return {key: torch.stack([item[key] for item in items]) for key in ("image", "target", "annotated")}

    def _crop(self, prepared: Mapping, rng: np.random.Generator) -> dict:
        from monai.transforms import RandCropByLabelClassesd, SpatialPadd

        keys = [k for k in ("image", "label", "left") if k in prepared]
        data = SpatialPadd(keys, spatial_size=self.crop)({k: prepared[k] for k in keys})
        ratios = crop_centre_ratios(self.cases.templates[prepared["dataset"]], self.cases.catalog)
        cropper = RandCropByLabelClassesd(keys, "label", self.crop, ratios=ratios, num_classes=len(ratios),
                                          num_samples=1, image_key="image", image_threshold=0, warn=False)
        cropper.set_random_state(seed=int(rng.integers(2**31)))
        crop = {key: _plain(value) for key, value in cropper(data)[0].items() if key in keys}
        image = crop["image"].float()
        if rng.random() < 0.2:  # intensity shift, as in the released training
            image = image + float(rng.uniform(-0.1, 0.1))
        out = self.cases.targets({**crop, "image": image, "dataset": prepared["dataset"]})
        return {"image": image, "target": out["target"], "annotated": out["annotated"]}


def crop_centre_ratios(template: DatasetTemplate, catalog: Catalog) -> list[float]:
    """How often a crop is centred on each label value of a dataset, index 0 being background.

    Organ datasets: foreground twice as often as background (the released 2:1), shared equally by the
    dataset's values, so a small organ is centred as often as the liver (centres drawn over all
    foreground voxels would mostly land in the liver and rarely bring the spleen into a crop).
    Datasets with lesions: 5:1:1 lesion:organ:background per value, as released. A value absent from
    a case is left out and the others keep their proportions.
    """
    values = range(1, max(template.labels) + 1)
    lesions = {v for v, names in template.labels.items() if catalog[names[0]].is_lesion}
    if lesions:
        return [1.0] + [5.0 if v in lesions else float(v in template.labels) for v in values]
    share = 2.0 / len(template.labels)
    return [1.0] + [share if v in template.labels else 0.0 for v in values]


def _plain(value) -> torch.Tensor:
    """A MONAI MetaTensor (or array) as a plain tensor."""
    return value.as_tensor() if hasattr(value, "as_tensor") else torch.as_tensor(value)
