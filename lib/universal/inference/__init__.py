"""Whole-scan inference: pre-processing to model space, sliding windows and their blending, the
:class:`Segmenter`, post-processing, the report, uncertainty scores, and :func:`segment` for files."""

from universal.inference.batch import CaseOutcome, segment
from universal.inference.segmenter import InferenceSettings, Segmentation, Segmenter

__all__ = ["CaseOutcome", "InferenceSettings", "Segmentation", "Segmenter", "segment"]
