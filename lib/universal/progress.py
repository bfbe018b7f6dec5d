"""Progress bars (tqdm) for long work: windows, cases, training steps."""

from __future__ import annotations

from tqdm.auto import tqdm


def progress_bar(total: int, description: str, unit: str, enabled: bool = True, *, leave: bool = False,
                 initial: int = 0) -> tqdm:
    """A bar of ``total`` ``unit``s (``initial`` done already); a silent one when not ``enabled``."""
    return tqdm(total=total, initial=initial, desc=description, unit=unit, disable=not enabled, leave=leave,
                dynamic_ncols=True)
