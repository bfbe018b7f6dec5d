"""The Medical Segmentation Decathlon's ``dataset.json``: the fields MONAI's ``DecathlonDataset`` reads
as a dataset's properties (Project-MONAI/MONAI monai/apps/datasets.py: name, description, reference,
licence, tensorImageSize, modality, labels, numTraining, numTest) and its ``training`` list of
``{"image", "label"}`` pairs, paths relative to the dataset's folder."""

from __future__ import annotations


def msd_dataset_json(name: str, description: str, labels: dict[int, str], training: list[dict], *,
                     reference: str = "universal", licence: str = "see the images' source") -> dict:
    """The document for a one-channel CT dataset; ``labels``: value → name, background 0 included."""
    return {"name": name, "description": description, "reference": reference, "licence": licence,
            "release": "1.0", "tensorImageSize": "3D", "modality": {"0": "CT"},
            "labels": {str(value): label for value, label in sorted(labels.items())}, "numTraining": len(training),
            "numTest": 0, "training": training, "test": []}
