"""The class catalogue: which structures the model segments, by id, name and text prompt.

Class ``id`` k is output channel k-1; ids are contiguous 1..N. Look-ups accept an id, a numeric
string, a display name or a synonym, ignoring case, spaces and punctuation; names may be in any
script.
"""

from __future__ import annotations

import colorsys
import difflib
import functools
import math
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from universal.errors import CatalogError, DuplicateClassError, UnknownClassError
from universal.io.atomic import atomic_write_text

PROMPT_TEMPLATE = "A computerized tomography of a {}"
KINDS = ("organ", "tumour", "cyst")
LOOKALIKE_SCRIPTS = {"LATIN", "GREEK", "CYRILLIC"}  # scripts with letters that look the same (Latin a, Cyrillic а)
DEFAULT_KIND = KINDS[0]  # a class is an organ unless it is named a lesion
# Coded concepts a class may carry for DICOM Segmentation (SegmentedPropertyCategory, -Type, -TypeModifier)
CODE_ROLES = ("category", "type", "modifier")

ClassKey = int | str


def prompt_for(name: str) -> str:
    """The prompt the released embeddings use for a class called ``name``."""
    return PROMPT_TEMPLATE.format(name)


def normalize_name(text: str) -> str:
    """The key names are compared by: 'Kidney_Left' -> 'kidney left', '肝臓' -> '肝臓'. Letters and digits
    of any script are kept (NFKC-normalised, case-folded); every other run becomes one space."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return " ".join("".join(c if c.isalnum() else " " for c in folded).split())


def check_name(name: str, what: str = "class name") -> str:
    """``name`` if it can name a class: it has a letter or digit, is not a number alone (numbers select
    classes by id) and does not mix look-alike scripts (Latin, Greek, Cyrillic); else a
    :class:`CatalogError` that says so."""
    key = normalize_name(name) if isinstance(name, str) else ""
    if not key:
        raise CatalogError(f"{what} {name!r} has no letter or digit; name the class in words, e.g. 'Appendix'")
    if key.replace(" ", "").isdecimal():
        raise CatalogError(f"{what} {name!r} is a number, and numbers select classes by id; name the class in words")
    scripts = sorted({unicodedata.name(c, "").split(" ")[0] for c in key if c.isalpha()} & LOOKALIKE_SCRIPTS)
    if len(scripts) > 1:
        raise CatalogError(f"{what} {name!r} mixes {' and '.join(s.title() for s in scripts)} letters, which look "
                           "alike; write it in one script")
    return name


@dataclass(frozen=True)
class ClassInfo:
    """One class: ``id`` (1-based output channel), display ``name``, CLIP ``prompt`` and metadata."""

    id: int
    name: str
    prompt: str
    kind: str = DEFAULT_KIND
    parents: tuple[str, ...] = ()
    color: tuple[int, int, int] = (128, 128, 128)
    synonyms: tuple[str, ...] = field(default=())
    codes: tuple[tuple[str, str, str, str], ...] = field(default=())

    @property
    def is_lesion(self) -> bool:
        return self.kind != DEFAULT_KIND

    def code(self, role: str) -> tuple[str, str, str] | None:
        """The coded concept (value, scheme, meaning) of ``role`` (one of :data:`CODE_ROLES`), if any."""
        return next((tuple(row[1:]) for row in self.codes if row[0] == role), None)

    def to_record(self) -> dict:
        record = asdict(self)
        record.update(parents=list(self.parents), color=list(self.color), synonyms=list(self.synonyms),
                      codes={role: [value, scheme, meaning] for role, value, scheme, meaning in self.codes})
        return record

    @classmethod
    def from_record(cls, record: dict) -> ClassInfo:
        try:
            name = str(record["name"])
            return cls(
                id=int(record["id"]),
                name=name,
                prompt=str(record.get("prompt") or prompt_for(name)),
                kind=str(record.get("kind", DEFAULT_KIND)),
                parents=tuple(str(p) for p in record.get("parents") or ()),
                color=tuple(int(c) for c in record.get("color") or (128, 128, 128)),
                synonyms=tuple(str(s) for s in record.get("synonyms") or ()),
                codes=_read_codes(record.get("codes") or {}),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise CatalogError(f"malformed class entry {record!r}: {error}") from error


def _read_codes(codes: dict) -> tuple[tuple[str, str, str, str], ...]:
    """``{role: [value, scheme, meaning]}`` as rows, roles checked against :data:`CODE_ROLES`."""
    unknown = set(codes) - set(CODE_ROLES)
    if unknown:
        raise ValueError(f"codes may name {', '.join(CODE_ROLES)}, not {', '.join(sorted(unknown))}")
    rows = []
    for role in CODE_ROLES:
        if role in codes:
            value, scheme, meaning = (str(part) for part in codes[role])
            rows.append((role, value, scheme, meaning))
    return tuple(rows)


class Catalog:
    """An ordered, immutable set of classes with ids 1..N.

    ``catalog[key]`` returns the :class:`ClassInfo` for an id or a name; iteration yields classes in
    id order. :meth:`add` returns a new catalogue with one more class.
    """

    def __init__(self, classes: Iterable[ClassInfo]):
        self._classes = tuple(classes)
        self._by_key: dict[str, ClassInfo] = {}
        self._validate()

    def _validate(self) -> None:
        if not self._classes:
            raise CatalogError("a catalogue needs at least one class")
        for position, info in enumerate(self._classes, start=1):
            if info.id != position:
                raise CatalogError(
                    f"class ids must be contiguous 1..N in order; found id {info.id} for "
                    f"'{info.name}' at position {position}"
                )
            if info.kind not in KINDS:
                raise CatalogError(f"class '{info.name}': kind must be one of {KINDS}, not '{info.kind}'")
            if len(info.color) != 3 or not all(0 <= c <= 255 for c in info.color):
                raise CatalogError(f"class '{info.name}': colour must be three values 0..255")
            if not info.prompt.strip():
                raise CatalogError(f"class '{info.name}': empty prompt")
            for key in (info.name, *info.synonyms):
                normalized = normalize_name(check_name(key, f"class name of '{info.name}'" if key != info.name
                                                       else "class name"))
                other = self._by_key.get(normalized)
                if other is not None and other.id != info.id:
                    raise CatalogError(f"name '{key}' of '{info.name}' is already used by '{other.name}'")
                self._by_key[normalized] = info
        for info in self._classes:
            for parent in info.parents:
                if normalize_name(parent) not in self._by_key:
                    raise CatalogError(f"class '{info.name}': parent organ '{parent}' is not in the catalogue")

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_records(cls, records: Iterable[dict]) -> Catalog:
        return cls(ClassInfo.from_record(r) for r in records)

    @classmethod
    def from_yaml(cls, path: str | Path) -> Catalog:
        """Read a catalogue file (a mapping with a ``classes`` list, as ``prompts/classes.yaml``)."""
        try:
            document = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as error:
            raise CatalogError(f"cannot read catalogue {path}: {error}") from error
        if not isinstance(document, dict) or not isinstance(document.get("classes"), list):
            raise CatalogError(f"catalogue {path} must be a mapping with a 'classes' list")
        return cls.from_records(document["classes"])

    @classmethod
    def default(cls) -> Catalog:
        """The 32 classes of the released model, from ``prompts/classes.yaml``."""
        return _default_catalog()

    def to_records(self) -> list[dict]:
        return [info.to_record() for info in self._classes]

    def save_yaml(self, path: str | Path) -> None:
        """Write the catalogue atomically, in the layout of ``prompts/classes.yaml``."""
        text = yaml.safe_dump({"classes": self.to_records()}, sort_keys=False, allow_unicode=True)
        atomic_write_text(path, text)

    # -- look-up ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._classes)

    def __iter__(self) -> Iterator[ClassInfo]:
        return iter(self._classes)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Catalog) and self._classes == other._classes

    def __hash__(self) -> int:
        return hash(self._classes)

    def __repr__(self) -> str:
        return f"Catalog({len(self)} classes: {', '.join(self.names[:4])}{', ...' if len(self) > 4 else ''})"

    def __contains__(self, key: object) -> bool:
        try:
            self[key]  # type: ignore[index]
        except UnknownClassError:
            return False
        return True

    def __getitem__(self, key: ClassKey) -> ClassInfo:
        if isinstance(key, bool) or not isinstance(key, int | str):
            raise UnknownClassError(f"a class is named by id or name, not {type(key).__name__} {key!r}")
        if isinstance(key, str) and key.strip().isdigit():
            key = int(key)
        if isinstance(key, int):
            if 1 <= key <= len(self._classes):
                return self._classes[key - 1]
            raise UnknownClassError(f"class id {key} is out of range: ids are 1..{len(self._classes)}")
        info = self._by_key.get(normalize_name(key))
        if info is None:
            raise UnknownClassError(self._unknown_message(key))
        return info

    def _unknown_message(self, key: str) -> str:
        close = difflib.get_close_matches(normalize_name(key), list(self._by_key), n=5, cutoff=0.6)
        names = list(dict.fromkeys(self._by_key[c].name for c in close))[:3]
        if names:
            return f"unknown class '{key}'; closest: {', '.join(names)}"
        return f"unknown class '{key}'; known classes: {', '.join(self.names)}"

    def ids(self, keys: Iterable[ClassKey]) -> list[int]:
        """Resolve ids or names to ids, in the given order, without duplicates."""
        return list(dict.fromkeys(self[key].id for key in keys))

    def select(self, classes: Iterable[ClassKey] | ClassKey | None) -> list[int]:
        """The ids of the classes asked for, in id order: every class for ``None``; otherwise ids,
        names or synonyms, one or several, or one comma-separated string (``"liver, 2"``)."""
        if classes is None:
            return [info.id for info in self._classes]
        if isinstance(classes, str):
            classes = [part for part in classes.split(",") if part.strip()]
        elif isinstance(classes, int | bool) or not isinstance(classes, Iterable):
            classes = [classes]
        return sorted(self.ids(classes))

    @property
    def names(self) -> list[str]:
        return [info.name for info in self._classes]

    @property
    def prompts(self) -> list[str]:
        return [info.prompt for info in self._classes]

    def label_map(self) -> dict[str, int]:
        """``{name: id}`` in id order, as MONAI Label and label files expect."""
        return {info.name: info.id for info in self._classes}

    # -- growth -------------------------------------------------------------------------------

    def add(
        self,
        name: str,
        prompt: str | None = None,
        *,
        kind: str = DEFAULT_KIND,
        parents: Iterable[str] = (),
        color: tuple[int, int, int] | None = None,
        synonyms: Iterable[str] = (),
    ) -> Catalog:
        """A new catalogue with one more class, id ``len(self) + 1``.

        ``prompt`` defaults to the released template around ``name``; ``color`` to the hue farthest
        from the colours already in use.
        """
        if normalize_name(name) in self._by_key:
            raise DuplicateClassError(f"class '{name}' already exists (id {self[name].id}); choose another name")
        info = ClassInfo(
            id=len(self._classes) + 1,
            name=name,
            prompt=prompt or prompt_for(name),
            kind=kind,
            parents=tuple(self[p].name for p in parents),
            color=tuple(color) if color else self._free_color(),
            synonyms=tuple(synonyms),
        )
        return Catalog((*self._classes, info))

    def _free_color(self) -> tuple[int, int, int]:
        candidates = [
            tuple(round(255 * c) for c in colorsys.hsv_to_rgb(h / 36, s, v))
            for h in range(36)
            for s, v in ((1.0, 1.0), (0.6, 0.9), (1.0, 0.6))
        ]
        used = [info.color for info in self._classes]
        return max(candidates, key=lambda c: min(math.dist(c, u) for u in used))


@functools.cache
def _default_catalog() -> Catalog:
    return Catalog.from_yaml(resources.files("universal.prompts").joinpath("classes.yaml"))
