"""Devices by name: only this machine's, one name each, refused with the ones there are."""

from __future__ import annotations

import pytest
import torch

from universal.devices import resolve_device
from universal.errors import UniversalError


def test_every_cpu_name_is_the_one_cpu_and_other_devices_are_refused_naming_the_choices():
    assert resolve_device("cpu") == resolve_device("CPU") == resolve_device("cpu:0") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
    for name in ("cpu:1", "cpu:99"):
        with pytest.raises(UniversalError, match="the CPU is one device here"):
            resolve_device(name)
    for name in ("meta", "mps", "xpu", "tpu", "cuda:x", "", "cpu:-1"):
        with pytest.raises(UniversalError, match=r"this machine has auto, cpu"):
            resolve_device(name)
    with pytest.raises(UniversalError, match="cuda:99"):
        resolve_device("cuda:99")
