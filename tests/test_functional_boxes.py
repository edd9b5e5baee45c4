"""Box arithmetic: batched NMS against a naive float64 loop (the very same kept indices), regression,
squaring, window boxes and pyramid scales against hand computations, crops against slicing, and
torchvision's nms when it is installed."""

import math

import pytest
import torch

from backends.functional.boxes import (
    BLOCK,
    box_area,
    crop_boxes,
    nms,
    overlap,
    pyramid_scales,
    regress,
    scaled_size,
    square,
    window_boxes,
)
from backends.imaging import resize

ATOL = 1e-12  # float64 hand computations


def naive_overlap(a, b, mode):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    area = lambda r: max(0.0, r[2] - r[0]) * max(0.0, r[3] - r[1])  # noqa: E731
    denom = area(a) + area(b) - inter if mode == "union" else min(area(a), area(b))
    return inter / denom if denom > 0 else 0.0


def naive_nms(boxes, scores, threshold, groups=None, mode="union"):
    """Python floats (float64), one box at a time: keep the best left, drop what it overlaps."""
    b = boxes.double().tolist()
    s = scores.double().tolist()
    g = groups.tolist() if groups is not None else [0] * len(b)
    order = sorted(range(len(b)), key=lambda i: (-s[i], i))
    dropped, keep = set(), []
    for pos, i in enumerate(order):
        if i in dropped:
            continue
        keep.append(i)
        for j in order[pos + 1:]:
            if j not in dropped and g[j] == g[i] and naive_overlap(b[i], b[j], mode) > threshold:
                dropped.add(j)
    return keep


def random_boxes(n, seed, span=100.0):
    gen = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=gen) * span
    wh = torch.rand(n, 2, generator=gen) * 40 + 2
    return torch.cat([xy, xy + wh], 1), torch.rand(n, generator=gen)


@pytest.mark.parametrize("mode", ["union", "min"])
@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_nms_equals_the_naive_loop(mode, threshold):
    boxes, scores = random_boxes(300, seed=int(threshold * 10) + len(mode))
    got = nms(boxes, scores, threshold, mode=mode).tolist()
    want = naive_nms(boxes, scores, threshold, mode=mode)
    assert got == want
    assert 10 < len(got) < 300  # boxes overlap enough that suppression happened, not so much that one is left


def test_batched_nms_keeps_groups_apart_and_equals_the_naive_loop():
    boxes, scores = random_boxes(600, seed=3, span=150.0)  # more than one block of rows
    groups = torch.arange(600) % 3
    got = nms(boxes, scores, 0.4, groups=groups).tolist()
    assert got == naive_nms(boxes, scores, 0.4, groups=groups)
    for k in range(3):  # each group alone gives the same survivors
        idx = torch.nonzero(groups == k)[:, 0]
        alone = idx[nms(boxes[idx], scores[idx], 0.4)].tolist()
        assert sorted(alone) == sorted(i for i in got if groups[i] == k)
    assert BLOCK < 600
    assert len(got) > len(nms(boxes, scores, 0.4))  # across groups, more survive


def test_nms_ties_keep_the_lower_index_and_identical_boxes_collapse():
    boxes = torch.tensor([[0.0, 0, 10, 10]] * 3 + [[50.0, 50, 60, 60]])
    scores = torch.tensor([0.5, 0.9, 0.9, 0.1])
    assert nms(boxes, scores, 0.5).tolist() == [1, 3]
    assert nms(boxes[:0], scores[:0], 0.5).tolist() == []


def test_overlap_by_hand():
    a = torch.tensor([[0.0, 0, 10, 10], [0.0, 0, 4, 2]], dtype=torch.float64)
    b = torch.tensor([[5.0, 0, 15, 20], [2.0, 2, 4, 4], [20.0, 20, 30, 30]], dtype=torch.float64)
    # first row: intersections 50, 4, 0 with areas 100 and 200, 4, 100; second row (area 8): 0, 0, 0
    union = torch.tensor([[50 / 250, 4 / 100, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    smaller = torch.tensor([[50 / 100, 4 / 4, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    assert torch.allclose(overlap(a, b, "union"), union, atol=ATOL)
    assert torch.allclose(overlap(a, b, "min"), smaller, atol=ATOL)
    assert torch.allclose(overlap(b, a, "union"), union.T, atol=ATOL)  # symmetric: nms relies on it
    assert box_area(torch.tensor([[3.0, 4, 1, 9]])).item() == 0.0  # x2 < x1: empty


def test_regress_moves_each_edge_by_its_offset_times_the_box_size():
    boxes = torch.tensor([[10.0, 20, 50, 40], [0.0, 0, 8, 30]], dtype=torch.float64)
    offsets = torch.tensor([[0.1, -0.2, 0.05, 0.5], [-0.5, 0.1, 0.25, -0.1]], dtype=torch.float64)
    # box 1: w = 40, h = 20 -> 10 + 4, 20 - 4, 50 + 2, 40 + 10; box 2: w = 8, h = 30 -> 0 - 4, 0 + 3, 8 + 2, 30 - 3
    want = torch.tensor([[14.0, 16, 52, 50], [-4.0, 3, 10, 27]], dtype=torch.float64)
    assert torch.allclose(regress(boxes, offsets), want, atol=ATOL)


def test_square_grows_the_short_side_about_the_centre():
    boxes = torch.tensor([[10.0, 20, 50, 40], [0.0, 0, 10, 30], [5.0, 5, 9, 9]], dtype=torch.float64)
    want = torch.tensor([[10.0, 10, 50, 50], [-10.0, 0, 20, 30], [5.0, 5, 9, 9]], dtype=torch.float64)
    assert torch.allclose(square(boxes), want, atol=ATOL)


def test_window_boxes_by_hand():
    # cell (row 3, col 5) at scale sx = 0.5, sy = 0.25 reads x 10..22, y 6..18 of the scaled image
    got = window_boxes(torch.tensor([3]), torch.tensor([5]), (0.5, 0.25))
    assert torch.allclose(got, torch.tensor([[20.0, 24, 44, 72]], dtype=torch.float64), atol=ATOL)


def test_pyramid_scales_by_hand():
    # first scale maps 20 px to 12; each next 0.709 smaller; last keeps 100 * s >= 12
    want = [0.6 * 0.709 ** k for k in range(5)]
    got = pyramid_scales(100, 200, 20)
    assert got == pytest.approx(want, abs=ATOL)
    assert 100 * got[-1] >= 12 > 100 * got[-1] * 0.709
    assert pyramid_scales(100, 200, 200) == []  # one window would need a 200-pixel short side
    assert scaled_size(100, 201, 0.6) == (60, math.ceil(201 * 0.6))
    with pytest.raises(ValueError, match="min_face"):
        pyramid_scales(10, 10, 0)


def test_crops_equal_slices_and_pad_with_zeros():
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 40, 50, generator=gen)
    boxes = torch.tensor([[10.0, 5, 22, 17], [3.0, 7, 27, 31], [-4.0, 30, 8, 42]])
    crops = crop_boxes(image, boxes, 12)
    assert torch.equal(crops[0], image[0, :, 5:17, 10:22])  # exactly 12 x 12: no resampling
    assert torch.allclose(crops[1], resize(image[:, :, 7:31, 3:27], (12, 12))[0], atol=1e-7)  # 24 -> 12, area
    assert torch.equal(crops[2, :, :10, 4:], image[0, :, 30:40, 0:8])  # the part inside the image
    assert (crops[2, :, 10:, :] == 0).all() and (crops[2, :, :, :4] == 0).all()  # the rest is zero


def test_shape_errors_name_both_shapes():
    boxes, scores = random_boxes(5, seed=1)
    with pytest.raises(ValueError, match=r"\(5, 4\).*\(4,\)"):
        nms(boxes, scores[:4], 0.5)
    with pytest.raises(ValueError, match=r"\(5, 4\).*\(5, 3\)"):
        regress(boxes, boxes[:, :3])
    with pytest.raises(ValueError, match=r"\(2, 3, 8, 8\).*\(5, 4\)"):
        crop_boxes(torch.zeros(2, 3, 8, 8), boxes, 4)


def test_torchvision_nms_agrees():
    ops = pytest.importorskip("torchvision.ops")
    boxes, scores = random_boxes(200, seed=7)
    assert nms(boxes, scores, 0.5).tolist() == ops.nms(boxes, scores, 0.5).tolist()
