"""What an anatomy check finds: :class:`Finding`, one implausible fact about a label map, said in one
line an annotator understands."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

SEVERITIES = ("info", "warning", "error")  # in rising order
CODES = ("side", "volume", "fragments", "outside_organ", "order", "truncated", "missing", "unexpected", "overlap")


@dataclass(frozen=True)
class Finding:
    """``code`` (one of :data:`CODES`), the ``classes`` concerned, the ``measured`` value, what was
    ``expected`` (a range or a rule), the ``severity`` (:data:`SEVERITIES`) and the ``message``."""

    code: str
    classes: tuple[str, ...]
    measured: float | str | None
    expected: str
    severity: str
    message: str
    details: dict = field(default_factory=dict)

    def to_record(self) -> dict:
        record = asdict(self)
        record["classes"] = list(self.classes)
        return record

    @classmethod
    def from_record(cls, record: dict) -> Finding:
        return cls(record["code"], tuple(record["classes"]), record.get("measured"), record.get("expected", ""),
                   record["severity"], record["message"], dict(record.get("details") or {}))


def rank(severity: str) -> int:
    """0 for info, 1 for warning, 2 for error."""
    return SEVERITIES.index(severity)


def worst(findings: Iterable[Finding]) -> str | None:
    """The most severe severity among ``findings``, or ``None`` without any."""
    return max((f.severity for f in findings), key=rank, default=None)


def counts(findings: Iterable[Finding]) -> dict[str, int]:
    """``{"info": n, "warning": n, "error": n}``."""
    found = dict.fromkeys(SEVERITIES, 0)
    for finding in findings:
        found[finding.severity] += 1
    return found
