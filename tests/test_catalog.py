from __future__ import annotations

import itertools
import math

import pytest

from universal import Catalog, UnknownClassError
from universal.catalog import normalize_name, prompt_for
from universal.errors import CatalogError

# The names the released embeddings were computed from, in order (reference spellings kept).
RELEASED_PROMPT_NAMES = [
    "Spleen", "Right Kidney", "Left Kidney", "Gall Bladder", "Esophagus", "Liver", "Stomach", "Arota",
    "Postcava", "Portal Vein and Splenic Vein", "Pancreas", "Right Adrenal Gland", "Left Adrenal Gland",
    "Duodenum", "Hepatic Vessel", "Right Lung", "Left Lung", "Colon", "Intestine", "Rectum", "Bladder",
    "Prostate", "Left Head of Femur", "Right Head of Femur", "Celiac Truck", "Kidney Tumor", "Liver Tumor",
    "Pancreas Tumor", "Hepatic Vessel Tumor", "Lung Tumor", "Colon Tumor", "Kidney Cyst",
]  # fmt: skip


@pytest.fixture
def catalog() -> Catalog:
    return Catalog.default()


def test_released_classes_in_reference_order(catalog):
    assert [info.id for info in catalog] == list(range(1, 33))
    assert catalog.prompts == [f"A computerized tomography of a {name}" for name in RELEASED_PROMPT_NAMES]


def test_display_names_are_correct_english(catalog):
    assert catalog[8].name == "Aorta"
    assert catalog[25].name == "Celiac Trunk"
    assert catalog[4].name == "Gallbladder"
    assert all("Arota" not in n and "Truck" not in n for n in catalog.names)


def test_kinds_and_parents(catalog):
    assert [info.id for info in catalog if info.kind == "tumour"] == [26, 27, 28, 29, 30, 31]
    assert catalog["kidney cyst"].kind == "cyst"
    assert catalog["Kidney Tumor"].parents == ("Right Kidney", "Left Kidney")
    assert catalog["Liver Tumor"].parents == ("Liver",)
    assert all(info.parents for info in catalog if info.is_lesion)
    assert not any(info.parents for info in catalog if not info.is_lesion)


def test_colours_are_distinct(catalog):
    colours = [info.color for info in catalog]
    assert min(math.dist(a, b) for a, b in itertools.combinations(colours, 2)) >= 30


@pytest.mark.parametrize(
    ("key", "class_id"),
    [(6, 6), ("6", 6), ("liver", 6), ("LIVER", 6), ("IVC", 9), ("postcava", 9), ("gallbladder", 4),
     ("gall bladder", 4), ("kidney_left", 3), ("Left-Kidney", 3), ("celiac trunk", 25), ("Aorta", 8)],
)
def test_lookup_by_id_name_and_synonym(catalog, key, class_id):
    assert catalog[key].id == class_id
    assert key in catalog


def test_unknown_name_suggests_closest(catalog):
    with pytest.raises(UnknownClassError, match=r"unknown class 'livr'; closest: Liver"):
        catalog["livr"]
    with pytest.raises(UnknownClassError, match=r"out of range: ids are 1\.\.32"):
        catalog[33]
    assert "appendix" not in catalog


def test_ids_keep_order_and_drop_duplicates(catalog):
    assert catalog.ids(["liver", 2, "Liver", "spleen"]) == [6, 2, 1]


def test_add_class(catalog):
    grown = catalog.add("Appendix", parents=())
    assert len(grown) == 33 and len(catalog) == 32
    appendix = grown["appendix"]
    assert appendix.id == 33
    assert appendix.prompt == prompt_for("Appendix") == "A computerized tomography of a Appendix"
    assert min(math.dist(appendix.color, info.color) for info in catalog) >= 30
    lesion = grown.add("Adrenal Tumor", kind="tumour", parents=["left adrenal gland"], prompt="adrenal mass")
    assert lesion[34].parents == ("Left Adrenal Gland",) and lesion[34].prompt == "adrenal mass"


def test_add_rejects_duplicates_and_unknown_parents(catalog):
    with pytest.raises(CatalogError, match="already exists"):
        catalog.add("ivc")
    with pytest.raises(UnknownClassError, match="closest: Liver"):
        catalog.add("Liver Cyst", kind="cyst", parents=["livr"])


def test_yaml_round_trip(catalog, tmp_path):
    grown = catalog.add("Appendix", synonyms=["vermiform appendix"])
    grown.save_yaml(tmp_path / "classes.yaml")
    assert Catalog.from_yaml(tmp_path / "classes.yaml") == grown


def test_invalid_catalogues_are_rejected(catalog):
    records = catalog.to_records()
    with pytest.raises(CatalogError, match="contiguous"):
        Catalog.from_records(records[1:])
    with pytest.raises(CatalogError, match="kind must be one of"):
        Catalog.from_records([{**records[0], "kind": "bone"}])
    with pytest.raises(CatalogError, match="parent organ 'Liver' is not in the catalogue"):
        Catalog.from_records([{**records[26], "id": 1}])


def test_names_in_any_script_are_kept_and_look_alikes_and_numbers_refused(catalog):
    assert normalize_name("Kidney_Left") == "kidney left" and normalize_name("ＬＩＶＥＲ") == "liver"
    grown = catalog.add("肝臓").add("Rein gauche (renal)")
    assert grown["肝臓"].id == 33 and grown["rein-gauche renal"].id == 34
    for name, problem in (("..", "no letter or digit"), ("肝", None), ("2024", "is a number"),
                          ("Lіver", "mixes Cyrillic and Latin letters"), ("Ωmega liver", "mixes Greek and Latin")):
        if problem is None:
            assert catalog.add(name)[name].name == name
        else:
            with pytest.raises(CatalogError, match=problem):
                catalog.add(name)
    with pytest.raises(CatalogError, match="no letter or digit"):
        catalog.add("Thing", synonyms=["--"])
