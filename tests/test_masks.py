"""Where a mask lies, from its counts per axis: the same box, centre and one-voxel growth as scipy's."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from universal.masks import bounding_box, grown_by_one, voxel_centre


def masks(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    sparse = rng.random((17, 11, 9)) < 0.02
    blob = ndimage.binary_opening(rng.random((20, 16, 12)) < 0.6)
    edge = np.zeros((8, 9, 10), bool)
    edge[0, :, -1] = edge[-1, 4, 0] = True  # voxels on the array's faces
    return [sparse, blob, edge]


@pytest.mark.parametrize("seed", range(3))
def test_the_box_centre_and_growth_match_scipys(seed):
    for mask in masks(seed):
        index = np.nonzero(mask)
        for margin in (0, 2):
            expected = tuple(slice(max(int(i.min()) - margin, 0), int(i.max()) + margin + 1) for i in index)
            assert bounding_box(mask, margin) == expected
        assert np.array_equal(voxel_centre(mask), np.asarray(ndimage.center_of_mass(mask)))
        assert np.array_equal(grown_by_one(mask), ndimage.binary_dilation(mask))


def test_an_empty_mask_has_no_box_and_no_centre():
    empty = np.zeros((4, 5, 6), bool)
    assert bounding_box(empty) is None
    assert np.isnan(voxel_centre(empty)).all()
    assert not grown_by_one(empty).any()
