"""The builtin patterns of the battery beyond rings (mpo/patterns.py): checkerboard, corner
islands, a letter drawn by hand, unframed random at fill 0.5; their shape and content."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from landscape_hpc.mpo.patterns import BUILTINS, LETTER_A, builtin_mask, random_mask
from landscape_hpc.mpo.scores import auc, radial_prior

NEW = ("checkerboard", "corners", "letter_a", "noise")


@pytest.mark.parametrize("name", NEW)
@pytest.mark.parametrize("size", [20, 28, [12, 16]])
def test_each_new_builtin_has_its_shape_and_both_classes(name, size):
    mask = builtin_mask(name, size)
    shape = (size, size) if isinstance(size, int) else tuple(size)
    assert name in BUILTINS and mask.shape == shape and mask.dtype == bool
    assert 0 < mask.sum() < mask.size
    assert np.array_equal(mask, builtin_mask(name, size))  # drawn, not sampled anew


def test_the_checkerboard_alternates_4x4_uniform_squares():
    mask = builtin_mask("checkerboard", 20)
    blocks = mask.reshape(4, 5, 4, 5)  # 4×4 squares of 5×5 cells
    assert (blocks.all(axis=(1, 3)) | ~blocks.any(axis=(1, 3))).all()  # each square uniform
    colours = blocks[:, 0, :, 0]
    assert colours[0, 0] and np.array_equal(colours, (np.add.outer(range(4), range(4)) % 2) == 0)
    assert mask.mean() == 0.5


def test_corner_islands_are_four_separate_blobs_away_from_the_centre():
    mask = builtin_mask("corners", 20)
    labels, n = ndimage.label(mask)
    assert n == 4
    for quadrant in (mask[:10, :10], mask[:10, 10:], mask[10:, :10], mask[10:, 10:]):
        assert quadrant.sum() == mask.sum() / 4  # one island each, the same size
    assert np.array_equal(mask, mask[::-1]) and np.array_equal(mask, mask[:, ::-1])
    assert not mask[8:12, 8:12].any() and not mask[0].any() and not mask[:, -1].any()
    # low loss far from the origin: the radial prior ranks it worse than chance
    assert auc(radial_prior(mask.shape), mask[::-1]) < 0.5


def test_the_letter_is_the_hand_drawn_glyph_scaled_with_a_margin():
    assert np.array_equal(builtin_mask("letter_a", [7, 5]), LETTER_A)
    mask = builtin_mask("letter_a", 20)
    assert not mask[:2].any() and not mask[-2:].any()  # a margin of a tenth
    assert not mask[:, :2].any() and not mask[:, -2:].any()
    assert np.array_equal(mask, mask[:, ::-1])  # the A is mirror-symmetric, so is its drawing
    assert mask[2, 9] and not mask[2, 2]  # the apex, not the top corners
    assert mask[11, 2:18].all()  # the bar
    assert mask[17, 2] and mask[17, 17] and not mask[17, 8:12].any()  # two legs, open below
    assert not mask[8, 6:14].any()  # the hole above the bar
    assert ndimage.label(mask, structure=np.ones((3, 3)))[1] == 1  # one stroke, diagonals touching


def test_noise_is_the_unframed_random_mask_at_fill_one_half():
    mask = builtin_mask("noise", 20)
    assert np.array_equal(mask, random_mask(20, 0.5, seed=0, frame=False))
    assert mask[0].any() and not mask[0].all()  # no ring or frame: every cell drawn
    assert abs(mask.mean() - 0.5) < 3.5 * np.sqrt(0.25 / mask.size)
