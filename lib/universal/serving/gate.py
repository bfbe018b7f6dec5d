"""The regression gate: a fine-tuned model replaces the one in use only if no class the old model
already segmented got worse, beyond a tolerance, on held-out annotated images.

Dice is measured as training's validation measures it (:func:`universal.training.metrics.class_dice`):
in model space, threshold 0.5, no post-processing, per class over the held-out cases that annotate it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from universal.catalog import Catalog
from universal.errors import UniversalError
from universal.inference.segmenter import Segmenter
from universal.inference.settings import InferenceSettings
from universal.nets.model import UniversalModel
from universal.training.datasets import Datalist
from universal.training.metrics import class_dice
from universal.training.sampler import PreparedCases

DEFAULT_TOLERANCE = 0.05  # Dice points an old class may lose before a model is refused


@dataclass
class GateDecision:
    """``publish``: whether the candidate may replace the previous model. ``before`` / ``after``:
    Dice per class of the previous and candidate models on the held-out cases; ``worse``: the old
    classes that lost more than ``tolerance``; ``cases``: held-out cases used."""

    publish: bool
    tolerance: float
    cases: int
    before: dict[str, float] = field(default_factory=dict)
    after: dict[str, float] = field(default_factory=dict)
    worse: list[str] = field(default_factory=list)
    reason: str = ""

    def to_record(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        """One line: the decision, why, and each old class's Dice before → after."""
        verdict = "publish" if self.publish else "keep the previous model"
        changes = ", ".join(f"{name} {self.before[name]:.3f}→{self.after.get(name, float('nan')):.3f}"
                            for name in self.before)
        return f"regression gate: {verdict}: {self.reason}" + (f" ({changes})" if changes else "")


def held_out_dice(model: UniversalModel, held_out: Datalist, catalog: Catalog, *, device: str = "auto",
                  classes: Sequence[str] | None = None) -> dict[str, float]:
    """Mean Dice per class of ``model`` over ``held_out.validation`` (:func:`class_dice`; only
    ``classes`` when given). ``catalog`` names every class the held-out labels annotate."""
    missing = [name for name in held_out.classes if name not in catalog]
    if missing:
        raise UniversalError(f"the held-out labels annotate {', '.join(missing)}, which the catalogue lacks")
    cases = PreparedCases(held_out.templates, catalog, model.input_spec)
    segmenter = Segmenter(model, InferenceSettings(device=device, postprocess=False), progress=False)
    return class_dice(segmenter, (cases.with_targets(case) for case in held_out.validation), catalog, classes)


def regression_gate(previous: UniversalModel, candidate: UniversalModel, held_out: Datalist, *,
                    tolerance: float = DEFAULT_TOLERANCE, device: str = "auto") -> GateDecision:
    """Compare ``candidate`` with ``previous`` on the held-out cases (``held_out.validation``).

    Rule: the candidate is published unless some class that ``previous`` has and a held-out case
    annotates scores a Dice more than ``tolerance`` below the previous model's. Without such
    evidence (no held-out case annotates an old class) it is published, and the reason says so.
    """
    if not 0 <= tolerance <= 1:
        raise UniversalError(f"the gate's tolerance is a Dice difference between 0 and 1, got {tolerance}")
    old_classes = [name for name in previous.catalog.names if name in held_out.classes]
    cases = len(held_out.validation)
    if not cases or not old_classes:
        reason = ("no held-out annotated image" if not cases else
                  "no held-out image annotates a class the previous model had") + "; published without a check"
        return GateDecision(True, tolerance, cases, reason=reason)
    before = held_out_dice(previous, held_out, candidate.catalog, device=device, classes=old_classes)
    after = held_out_dice(candidate, held_out, candidate.catalog, device=device)
    worse = [name for name, score in before.items() if after.get(name, 0.0) < score - tolerance]
    if worse:
        reason = f"{', '.join(worse)} lost more than {tolerance:g} Dice on {cases} held-out image(s)"
    else:
        reason = f"no old class lost more than {tolerance:g} Dice on {cases} held-out image(s)"
    return GateDecision(not worse, tolerance, cases, before, after, worse, reason)
