"""Anatomy checks that flag implausible label maps without ground truth: rules in
``prompts/anatomy.yaml``, checks in :mod:`~universal.quality.checks`, findings in
:mod:`~universal.quality.findings`."""

from universal.quality.checks import check_label_map, check_masks, load_rules
from universal.quality.findings import SEVERITIES, Finding, counts, worst

__all__ = ["SEVERITIES", "Finding", "check_label_map", "check_masks", "counts", "load_rules", "worst"]
