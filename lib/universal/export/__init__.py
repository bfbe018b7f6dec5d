"""The labelled dataset a team delivers, in the layouts trainers read (nnU-Net v2, the Medical
Segmentation Decathlon, plain NIfTI), with its provenance."""

from universal.export.dataset import LABELS, ExportSummary, export_dataset
from universal.export.layouts import FORMATS

__all__ = ["FORMATS", "LABELS", "ExportSummary", "export_dataset"]
