"""The private names of MONAI Label that the app relies on (lib/patches.py: INTERNALS) are there in the
installed MONAI Label: an upgrade that removes one fails here, naming it, rather than in a request."""

from __future__ import annotations

import importlib
import sys
from types import SimpleNamespace

from app_server import APP

sys.path.insert(0, str(APP))
from lib.patches import INTERNALS


def owner_of(target: str, folder):
    """The module, or an instance of the class, that ``target`` names."""
    module_name, _, class_name = target.rpartition(".")
    if not class_name[:1].isupper():
        return importlib.import_module(target)
    kind = getattr(importlib.import_module(module_name), class_name)
    if class_name == "DICOMWebDatastore":
        return kind(SimpleNamespace(base_url="http://127.0.0.1:1/dicom-web"), {}, str(folder))
    return kind(str(folder), auto_reload=True)


def test_every_private_name_the_app_relies_on_is_there(tmp_path):
    missing = []
    for target, names in INTERNALS.items():
        owner = owner_of(target, tmp_path / target)
        try:
            for name in names:
                value = owner
                for part in name.split("."):
                    value = getattr(value, part, None)
                if value is None:
                    missing.append(f"{target}.{name}")
        finally:
            observer = getattr(owner, "_observer", None)  # the datastore's folder watcher
            if observer is not None:
                observer.stop()
    assert not missing, f"MONAI Label no longer has {', '.join(missing)}: see apps/universal/lib/patches.py"
