"""Whole-scan inference: pre-processing to model space, sliding windows and their blending, the
:class:`Segmenter`, the stages around it, post-processing, the report, uncertainty scores, and
:func:`segment` for many files (in one process, or on Ray)."""

from universal.inference.batch import segment
from universal.inference.jobs import CaseOutcome
from universal.inference.result import Segmentation
from universal.inference.segmenter import Segmenter
from universal.inference.settings import InferenceSettings

__all__ = ["CaseOutcome", "InferenceSettings", "Segmentation", "Segmenter", "segment"]
