"""What to segment: command-line inputs (files, folders, DICOM series, lists of them) as cases, each
with the name of its output folder."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from universal.errors import UniversalError
from universal.io.scans import NIFTI_SUFFIXES, NRRD_SUFFIXES, case_name

LIST_SUFFIXES = (".txt", ".csv")
SCAN_SUFFIXES = (*NIFTI_SUFFIXES, *NRRD_SUFFIXES)
# A DICOM Part 10 file holds 'DICM' after its 128-byte preamble (pydicom/pydicom
# src/pydicom/filereader.py, read_preamble: "('DICM') is found at byte offset 128").
DICOM_MAGIC, DICOM_MAGIC_OFFSET = b"DICM", 128


@dataclass(frozen=True)
class CaseInput:
    """One scan: ``path`` (a NIfTI or NRRD file, or a folder holding a DICOM series), ``name`` (its
    output folder) and ``series`` (the SeriesInstanceUID to read from a folder with several)."""

    name: str
    path: Path
    series: str | None = None


def list_cases(inputs: Iterable[str | Path | CaseInput], series: str | None = None) -> list[CaseInput]:
    """The cases of ``inputs``, in order:

    - a scan file, or a folder holding DICOM files: one case, named by the file (without its suffix)
      or the folder;
    - any other folder: every scan file in it and every folder below it holding DICOM files, named by
      their path inside it (``patient1/ct.nii.gz`` → ``patient1_ct``);
    - a ``.txt`` list (a path per line; ``#`` starts a comment) or a ``.csv`` table (an ``image`` or
      ``path`` column, else the first; an optional ``name`` column names the cases): each entry as
      above, relative paths read from the list's folder;
    - a :class:`CaseInput` as it is.

    Other files are cases too, reported as failed when they cannot be read. Raises
    :class:`UniversalError` when there is nothing to segment or two cases share a name (their outputs
    would overwrite each other).
    """
    cases = [case for item in inputs for case in _expand(item, series)]
    if not cases:
        raise UniversalError("no input scans given")
    names = [case.name for case in cases]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise UniversalError(f"several inputs share the case name {', '.join(repeated[:5])}; their outputs would "
                             "overwrite each other, so segment them into different output folders")
    return cases


def _expand(item: str | Path | CaseInput, series: str | None, name: str | None = None) -> Iterator[CaseInput]:
    if isinstance(item, CaseInput):
        yield item
        return
    path = Path(item)
    if path.is_file() and path.name.lower().endswith(LIST_SUFFIXES):
        yield from _read_list(path, series)
    elif path.is_dir() and not holds_dicom(path):
        found = list(_scans_below(path, series))
        if not found:
            raise UniversalError(f"{path}: no scans in this folder (NIfTI, NRRD, or folders of DICOM files)")
        yield from found
    else:  # a scan, a DICOM folder, or a path that does not exist: reading it says what is wrong
        yield CaseInput(name or case_name(path), path, series)


def _scans_below(folder: Path, series: str | None) -> Iterator[CaseInput]:
    """The scan files in ``folder`` and the DICOM folders below it, named by their path inside it."""
    for path in sorted(folder.rglob("*")):
        inside = path.relative_to(folder)
        if path.is_file() and path.name.lower().endswith(SCAN_SUFFIXES):
            yield CaseInput("_".join((*inside.parent.parts, case_name(path))), path, series)
        elif path.is_dir() and holds_dicom(path):
            yield CaseInput("_".join(inside.parts), path, series)


def _read_list(path: Path, series: str | None) -> Iterator[CaseInput]:
    """The entries of a ``.txt`` or ``.csv`` list, relative paths taken from the list's folder."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise UniversalError(f"{path}: cannot be read as a list of scans ({error})") from error
    if path.name.lower().endswith(".csv"):
        rows = list(csv.DictReader(text.splitlines()))
        columns = list(rows[0]) if rows else []
        column = next((c for c in ("image", "path") if c in columns), columns[0] if columns else None)
        entries = [(row[column], row.get("name") or None) for row in rows if column and row.get(column)]
    else:
        lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
        entries = [(line, None) for line in lines if line]
    if not entries:
        raise UniversalError(f"{path}: the list names no scans")
    for entry, name in entries:
        yield from _expand(path.parent / Path(entry).expanduser(), series, name)


def holds_dicom(folder: Path) -> bool:
    """Whether ``folder`` holds DICOM files itself (not only in folders below it)."""
    for path in folder.iterdir():
        if path.is_file():
            try:
                with path.open("rb") as stream:
                    stream.seek(DICOM_MAGIC_OFFSET)
                    if stream.read(len(DICOM_MAGIC)) == DICOM_MAGIC:
                        return True
            except OSError:
                continue
    return False
