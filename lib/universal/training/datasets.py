"""Partially labelled datasets: templates and datalists.

A dataset annotates some classes of the catalogue. Its **template** (``prompts/datasets.yaml``) maps
each label value to a class, or to a right/left pair drawn as one value. :func:`prepare_datalist`
lists the cases of dataset folders with the classes each annotates (the datalist, one JSON file: the
contract between ``universal prepare`` and ``universal train``); :mod:`universal.training.targets`
turns their labels into per-class targets at training time.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from universal.catalog import Catalog, normalize_name
from universal.errors import UniversalError
from universal.io.atomic import atomic_write_text
from universal.io.scans import IMAGE_SUFFIXES

DATALIST_FORMAT = "universal-datalist"


class DataError(UniversalError):
    """A dataset, template or datalist that cannot be used as given."""


@dataclass(frozen=True)
class DatasetTemplate:
    """How one dataset's label values map onto catalogue classes.

    ``labels``: value → ``(class,)`` or ``(right class, left class)`` for a pair drawn as one value.
    ``lesions_in_organ``: lesion voxels also count as the organ the lesion lies in (its catalogue
    ``parents``), for datasets that label the lesion instead of the organ.
    """

    name: str
    labels: dict[int, tuple[str, ...]]
    lesions_in_organ: bool = False
    aliases: tuple[str, ...] = ()
    description: str = ""

    @property
    def classes(self) -> list[str]:
        """The classes the dataset annotates, in label order."""
        return list(dict.fromkeys(name for names in self.labels.values() for name in names))

    @property
    def has_pairs(self) -> bool:
        """Whether some value is a right/left pair, split by side."""
        return any(len(names) == 2 for names in self.labels.values())

    def matches(self, name: str) -> bool:
        return normalize_name(name) in {normalize_name(n) for n in (self.name, *self.aliases)}

    def to_record(self) -> dict:
        return {
            "description": self.description,
            "aliases": list(self.aliases),
            "labels": {value: names[0] if len(names) == 1 else list(names) for value, names in self.labels.items()},
            "lesions_in_organ": self.lesions_in_organ,
        }

    @classmethod
    def from_record(cls, name: str, record: Mapping) -> DatasetTemplate:
        if not isinstance(record, Mapping) or not isinstance(record.get("labels"), Mapping) or not record["labels"]:
            raise DataError(f"dataset template '{name}' needs a non-empty 'labels' mapping of value: class")
        labels = {}
        for value, names in record["labels"].items():
            names = (names,) if isinstance(names, str) else tuple(names or ())
            if not str(value).isdigit() or not 1 <= int(value) <= 255:
                raise DataError(f"dataset template '{name}': label value {value!r} must be an integer 1..255")
            if len(names) not in (1, 2) or not all(isinstance(n, str) and n.strip() for n in names):
                raise DataError(
                    f"dataset template '{name}': value {value} must name one class or a [right, left] pair, "
                    f"not {names!r}"
                )
            labels[int(value)] = names
        return cls(
            name=name,
            labels=dict(sorted(labels.items())),
            lesions_in_organ=bool(record.get("lesions_in_organ", False)),
            aliases=tuple(str(a) for a in record.get("aliases") or ()),
            description=str(record.get("description") or ""),
        )


def load_templates(*paths: str | Path) -> dict[str, DatasetTemplate]:
    """The packaged templates, then those of each YAML file in ``paths`` (a later entry of the same
    name replaces an earlier one)."""
    sources = [resources.files("universal.prompts").joinpath("datasets.yaml"), *map(Path, paths)]
    templates: dict[str, DatasetTemplate] = {}
    for source in sources:
        try:
            document = yaml.safe_load(source.read_text())
        except (OSError, yaml.YAMLError) as error:
            raise DataError(f"cannot read dataset templates {source}: {error}") from error
        if not isinstance(document, dict) or not isinstance(document.get("datasets"), dict):
            raise DataError(f"dataset templates {source} must be a mapping with a 'datasets' mapping")
        for name, record in document["datasets"].items():
            templates[str(name)] = DatasetTemplate.from_record(str(name), record)
    return templates


def find_template(templates: Mapping[str, DatasetTemplate], *names: str) -> DatasetTemplate | None:
    """The template whose name or alias is one of ``names`` (checked in order), or ``None``."""
    for name in names:
        for template in templates.values():
            if name and template.matches(name):
                return template
    return None


def template_from_label_names(name: str, label_names: Mapping, catalog: Catalog) -> DatasetTemplate | None:
    """A template read from ``dataset.json`` label names when every one is a catalogue class name."""
    labels = {}
    for value, label in label_names.items():
        if str(value) == "0":
            continue
        if not str(value).isdigit() or str(label) not in catalog:
            return None
        labels[int(value)] = (catalog[str(label)].name,)
    if not labels:
        return None
    return DatasetTemplate(name, dict(sorted(labels.items())), description="from the label names of dataset.json")


# -- datalists --------------------------------------------------------------------------------


@dataclass
class Datalist:
    """Training and validation cases of one or more datasets.

    Each case is ``{"image": path, "label": path, "dataset": name, "classes": [annotated names]}``.
    """

    templates: dict[str, DatasetTemplate]
    training: list[dict] = field(default_factory=list)
    validation: list[dict] = field(default_factory=list)

    @property
    def classes(self) -> list[str]:
        """Every class some dataset annotates, in order of first appearance."""
        return list(dict.fromkeys(name for t in self.templates.values() for name in t.classes))

    def save(self, path: str | Path) -> Path:
        document = {
            "format": DATALIST_FORMAT,
            "format_version": 1,
            "datasets": {name: t.to_record() for name, t in self.templates.items()},
            "training": self.training,
            "validation": self.validation,
        }
        atomic_write_text(path, json.dumps(document, indent=2) + "\n")
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> Datalist:
        path = Path(path)
        try:
            document = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise DataError(f"cannot read datalist {path}: {error}. Write one with `universal prepare`") from error
        if not isinstance(document, dict) or document.get("format") != DATALIST_FORMAT:
            raise DataError(f"{path} is not a datalist written by `universal prepare`")
        templates = {name: DatasetTemplate.from_record(name, r) for name, r in document["datasets"].items()}
        datalist = cls(templates, list(document.get("training", [])), list(document.get("validation", [])))
        for case in datalist.training + datalist.validation:
            if case.get("dataset") not in templates:
                raise DataError(f"datalist {path}: case {case.get('image')} names unknown dataset "
                                f"{case.get('dataset')!r}")
            for key in ("image", "label"):
                if not Path(case[key]).is_file():
                    raise DataError(f"datalist {path}: {key} file {case[key]} does not exist")
        if not datalist.training:
            raise DataError(f"datalist {path} has no training cases")
        return datalist


def prepare_datalist(
    folders: Sequence[str | Path],
    *,
    templates: Mapping[str, DatasetTemplate] | None = None,
    template_names: Sequence[str | None] | None = None,
    catalog: Catalog | None = None,
    validation_fraction: float = 0.2,
    seed: int = 0,
) -> Datalist:
    """A datalist of the cases in dataset ``folders``.

    A folder is the Medical Segmentation Decathlon layout (``dataset.json`` listing ``training``
    pairs) or any folder with ``imagesTr``/``labelsTr`` (or ``images``/``labels``) subfolders whose
    files pair by name. Its template is ``template_names[i]`` when given, else the one whose name or
    alias is the ``dataset.json`` name or the folder name, else one read from ``dataset.json`` label
    names when they are all catalogue classes. ``validation_fraction`` of each dataset's cases (at
    least one, when it has two or more) are held out for validation, chosen by ``seed``.
    """
    templates = dict(templates or load_templates())
    catalog = catalog or Catalog.default()
    if not 0 <= validation_fraction < 1:
        raise DataError(f"validation fraction must be in [0, 1), not {validation_fraction}")
    chosen: dict[str, DatasetTemplate] = {}
    training, validation = [], []
    for folder, asked in zip(folders, template_names or [None] * len(folders), strict=True):
        folder = Path(folder)
        description, pairs = _list_pairs(folder)
        template = _choose_template(folder, description, asked, templates, catalog)
        if template.name in chosen and chosen[template.name] != template:
            raise DataError(f"two different templates are called '{template.name}'")
        chosen[template.name] = template
        cases = [
            {"image": str(image), "label": str(label), "dataset": template.name, "classes": template.classes}
            for image, label in pairs
        ]
        held_out = round(len(cases) * validation_fraction) if len(cases) > 1 else 0
        if validation_fraction and len(cases) > 1:
            held_out = max(1, held_out)
        order = list(range(len(cases)))
        random.Random(f"{seed}:{template.name}").shuffle(order)
        validation += [cases[i] for i in sorted(order[:held_out])]
        training += [cases[i] for i in sorted(order[held_out:])]
    return Datalist(chosen, training, validation)


def _list_pairs(folder: Path) -> tuple[dict, list[tuple[Path, Path]]]:
    """``dataset.json`` (or ``{}``) and the (image, label) pairs of a dataset folder."""
    if not folder.is_dir():
        raise DataError(f"dataset folder {folder} does not exist")
    manifest = folder / "dataset.json"
    description = {}
    if manifest.is_file():
        try:
            description = json.loads(manifest.read_text())
        except ValueError as error:
            raise DataError(f"{manifest} is not valid JSON: {error}") from error
    if description.get("training"):
        pairs = [(folder / c["image"], folder / c["label"]) for c in description["training"]]
    else:
        pairs = _pair_by_name(folder)
    missing = [str(p) for pair in pairs for p in pair if not p.is_file()]
    if missing:
        raise DataError(f"dataset {folder}: {len(missing)} listed file(s) missing, e.g. {missing[0]}")
    if not pairs:
        raise DataError(
            f"no labelled cases in {folder}: expected dataset.json with a 'training' list, or imagesTr/ and "
            "labelsTr/ (or images/ and labels/) with files of the same names"
        )
    return description, pairs


def _pair_by_name(folder: Path) -> list[tuple[Path, Path]]:
    for images, labels in (("imagesTr", "labelsTr"), ("images", "labels")):
        if (folder / images).is_dir() and (folder / labels).is_dir():
            found = sorted(p for p in (folder / images).iterdir() if p.name.endswith(IMAGE_SUFFIXES))
            unpaired = [p.name for p in found if not (folder / labels / p.name).is_file()]
            if unpaired:
                raise DataError(f"{folder / images}: no label of the same name for {', '.join(unpaired[:3])}")
            return [(p, folder / labels / p.name) for p in found]
    return []


def _choose_template(
    folder: Path, description: dict, asked: str | None, templates: Mapping[str, DatasetTemplate], catalog: Catalog
) -> DatasetTemplate:
    if asked:
        template = find_template(templates, asked)
        if template is None:
            raise DataError(f"no dataset template called '{asked}'; known: {', '.join(templates)}")
        return template
    names = [str(description.get("name") or ""), folder.name]
    template = find_template(templates, *names) or template_from_label_names(
        names[0] or folder.name, description.get("labels") or {}, catalog
    )
    if template is None:
        raise DataError(
            f"no template for dataset {folder}: name one with FOLDER=TEMPLATE, or describe its label values "
            "in a templates file (see prompts/datasets.yaml) passed with --templates"
        )
    return template
