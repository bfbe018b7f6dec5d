"""Measurements on constructed masks with known sizes."""

from __future__ import annotations

import numpy as np
import pytest

from universal.inference.report import class_statistics, lesion_findings, longest_diameter

AFFINE = np.diag([0.8, 0.8, 2.5, 1.0])  # mm per voxel, as a clinical scan


def test_volume_and_components():
    mask = np.zeros((40, 40, 20), dtype=bool)
    mask[2:12, 2:12, 2:6] = True  # 400 voxels
    mask[20:22, 20:22, 10:11] = True  # 4 voxels, a second component
    stats = class_statistics(mask, AFFINE)
    assert stats == {"voxels": 404, "volume_ml": pytest.approx(404 * 0.8 * 0.8 * 2.5 / 1000, abs=1e-3),
                     "components": 2}
    assert class_statistics(np.zeros_like(mask), AFFINE) == {"voxels": 0, "volume_ml": 0.0, "components": 0}


def test_lesion_findings_describe_the_largest_lesion():
    mask = np.zeros((60, 60, 20), dtype=bool)
    mask[5:30, 10:11, 5:6] = True  # a line of 25 voxels along x: 24 × 0.8 mm between end centres
    mask[40:42, 40:42, 10:12] = True
    findings = lesion_findings(mask, AFFINE)
    assert findings["detected"] and findings["count"] == 2
    assert findings["largest_volume_ml"] == pytest.approx(25 * 1.6 / 1000, abs=1e-3)
    assert findings["largest_diameter_mm"] == pytest.approx(24 * 0.8)
    assert lesion_findings(np.zeros_like(mask), AFFINE)["detected"] is False


def test_longest_diameter_of_a_ball_and_a_flat_disc():
    i, j, k = np.meshgrid(*(np.arange(n) for n in (50, 50, 20)), indexing="ij")
    world = np.stack([i * 0.8, j * 0.8, k * 2.5])
    centre = np.array([20.0, 20.0, 25.0])[:, None, None, None]
    ball = ((world - centre) ** 2).sum(0) <= 12.0**2
    assert 22.0 <= longest_diameter(ball, AFFINE) <= 24.01
    disc = ball & (k == 10)  # all points in one plane: the hull is joggled into 3D
    assert 22.0 <= longest_diameter(disc, AFFINE) <= 24.01
