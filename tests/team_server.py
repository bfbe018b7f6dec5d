"""The app with authentication on and a team of people, each with a token of the test realm, for
the tests of annotation teams: :func:`running_team` starts it; :func:`save` submits a label as 3D
Slicer does; :func:`served` asks for a prediction as an annotator's viewer does."""

from __future__ import annotations

import contextlib
import gzip
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import requests
from app_server import start_server
from realm import bearer, rsa_key, running_realm, token

from universal.io.labels import write_label_file


@contextlib.contextmanager
def running_team(root: Path, studies: Path, model_dir: Path, clip_weights: Path,
                 people: Mapping[str, Sequence[str]], lead: str) -> Iterator[dict]:
    """The server on ``studies`` with the model folder ``model_dir``; yields ``{"server", "root", "tokens",
    name: request function}`` for each of ``people`` (name → roles): ``team[name](method, path, ...)``.
    The :class:`Server`'s own requests go as ``lead``."""
    key = rsa_key()
    tokens = {name: token(key, roles, user=name) for name, roles in people.items()}
    with running_realm(key) as realm:
        env = {"UNIVERSAL_OFFLINE": "1", "UNIVERSAL_CACHE_DIR": str(root / "cache"),
               "UNIVERSAL_CLIP_WEIGHTS": str(clip_weights),
               "MONAI_LABEL_AUTH_ENABLE": "true", "MONAI_LABEL_AUTH_REALM_URI": realm}
        server = start_server(root, studies, {"model_dir": str(model_dir)}, env, headers=bearer(tokens[lead]))

        def as_person(name):
            headers = bearer(tokens[name])
            return lambda method, path, **kwargs: requests.request(method, server.url + path, headers=headers,
                                                                   timeout=180, **kwargs)

        try:
            yield {"server": server, "root": root, "tokens": tokens, **{name: as_person(name) for name in people}}
        finally:
            server.stop()


def save(team, person: str, image: str, masks: dict[str, np.ndarray], folder: Path, empty=()) -> dict:
    """``person`` submits a label as 3D Slicer does: one value a segment, named in label_info (``empty``:
    segments listed without voxels); ``folder`` holds the file sent."""
    shape = next(iter(masks.values())).shape
    labels = np.zeros(shape, np.uint8)
    info = []
    for value, (name, mask) in enumerate(masks.items(), start=1):
        labels[mask] = value
        info.append({"name": name, "idx": value})
    info += [{"name": name, "idx": len(info) + 1} for name in empty]
    path = write_label_file(labels, nib.load(team["server"].studies / f"{image}.nii.gz").affine,
                            folder / f"{person}-{image}.nrrd")
    with path.open("rb") as stream:
        answer = team[person]("PUT", "/datastore/label", params={"image": image, "tag": "final"},
                              files={"label": (path.name, stream)},
                              data={"params": json.dumps({"label_info": info, "client_id": "user-xyz"})})
    assert answer.status_code == 200, answer.text
    return {"labels": labels, "path": path}


def served(team, person: str, image: str) -> np.ndarray:
    """``person`` asks for every class (Auto Segmentation): the label map, values = catalogue ids."""
    answer = team[person]("POST", "/infer/universal", params={"image": image, "output": "image"},
                          data={"params": json.dumps({"result_extension": ".nii.gz"})})
    assert answer.status_code == 200, answer.text
    return np.asarray(nib.Nifti1Image.from_bytes(gzip.decompress(answer.content)).dataobj)
