"""MTCNN face detection as pure functions, one per stage, so each stage can be shown on its own.

1. **P-Net on an image pyramid**: the image is resized by each scale of ``pyramid_scales`` (the
   first maps ``min_face`` pixels to P-Net's 12-pixel window, each next one 0.709 times smaller),
   P-Net gives a face-probability map per scale (stride 2) and box offsets per cell.
2. **Candidates**: cells whose probability reaches the P-Net threshold become boxes in the input
   frame; NMS within each scale (IoU 0.5), then across scales (IoU 0.7); P-Net's offsets move
   their edges and each box is squared: these are the proposals.
3. **R-Net** scores a 24 x 24 crop of each proposal; those above its threshold survive NMS
   (IoU 0.7), are moved by R-Net's offsets and squared.
4. **O-Net** scores a 48 x 48 crop of each, regresses five landmarks inside its box and the box
   edges; NMS with intersection over the smaller box (0.7) removes boxes nested in others.

Boxes are x1, y1, x2, y2 in input-pixel edge coordinates; landmarks are (x, y) in the same frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from backends.functional.boxes import crop_boxes, nms, pyramid_scales, regress, scaled_size, square, window_boxes
from backends.imaging import resize
from backends.models.mtcnn import INPUT_SIZE, ONet, PNet, RNet, normalise

FACTOR = 0.709
STRIDE, WINDOW = 2, 12
NMS_WITHIN_SCALE, NMS_ACROSS_SCALES, NMS_RNET, NMS_ONET = 0.5, 0.7, 0.7, 0.7
LANDMARKS = ("left eye", "right eye", "nose", "left mouth corner", "right mouth corner")  # as seen in the image


@dataclass(frozen=True)
class Level:
    """P-Net's output at one pyramid scale."""

    scale: float
    size: tuple[int, int]  # (h, w) of the resized image P-Net read
    prob: torch.Tensor  # (h', w') face probability per cell
    offsets: torch.Tensor  # (4, h', w') dx1, dy1, dx2, dy2 per cell

    def scale_xy(self, height: int, width: int) -> tuple[float, float]:
        """The exact (sx, sy) from the input to the resized image (sides are whole pixels)."""
        return self.size[1] / width, self.size[0] / height


@dataclass(frozen=True)
class Boxes:
    """Boxes of one stage with their scores; what each stage adds is set, the rest is None."""

    boxes: torch.Tensor  # (N, 4) x1, y1, x2, y2
    scores: torch.Tensor  # (N,)
    offsets: Optional[torch.Tensor] = None  # (N, 4) the stage's regression, not yet applied
    level: Optional[torch.Tensor] = None  # (N,) pyramid level of a P-Net candidate
    landmarks: Optional[torch.Tensor] = None  # (N, 5, 2) x, y

    def __len__(self) -> int:
        return len(self.boxes)

    def take(self, index: torch.Tensor) -> Boxes:
        pick = (lambda t: None if t is None else t[index])  # noqa: E731
        return Boxes(self.boxes[index], self.scores[index], pick(self.offsets), pick(self.level), pick(self.landmarks))


@dataclass(frozen=True)
class Detection:
    levels: tuple[Level, ...]
    candidates: Boxes  # P-Net cells at or above the threshold, every scale, as read
    proposals: Boxes  # after NMS, P-Net's regression and squaring: what R-Net reads
    refined: Boxes  # R-Net's survivors after NMS, regression and squaring: what O-Net reads
    faces: Boxes  # O-Net's survivors with landmarks, regressed, after NMS


def _empty(image: torch.Tensor, landmarks: bool = False) -> Boxes:
    z = image.new_zeros
    return Boxes(z((0, 4)), z((0,)), z((0, 4)), None, z((0, 5, 2)) if landmarks else None)


def pnet_level(pnet: PNet, image: torch.Tensor, scale: float) -> Level:
    """P-Net's probability and offsets on ``image`` (1, 3, H, W) in [0, 1] resized by ``scale``."""
    size = scaled_size(image.shape[2], image.shape[3], scale)
    prob, offsets = pnet(normalise(resize(image, size)))
    return Level(scale, size, prob[0], offsets[0])


def pyramid(pnet: PNet, image: torch.Tensor, min_face: float, factor: float = FACTOR) -> tuple[Level, ...]:
    """P-Net at every scale of the pyramid for faces of ``min_face`` pixels and up."""
    return tuple(pnet_level(pnet, image, s) for s in pyramid_scales(image.shape[2], image.shape[3], min_face, factor))


def candidates(levels: tuple[Level, ...], threshold: float, height: int, width: int) -> Boxes:
    """Every cell with probability >= ``threshold`` as a box in the input frame, with its offsets
    and level."""
    parts = []
    for k, lv in enumerate(levels):
        rows, cols = torch.nonzero(lv.prob >= threshold, as_tuple=True)
        boxes = window_boxes(rows, cols, lv.scale_xy(height, width), STRIDE, WINDOW).to(lv.prob.dtype)
        parts.append(Boxes(boxes, lv.prob[rows, cols], lv.offsets[:, rows, cols].T,
                           torch.full_like(rows, k)))
    if not parts:
        raise ValueError("the image is smaller than one 12-pixel window at this minimum face size")
    return Boxes(*(torch.cat([getattr(p, f) for p in parts]) for f in ("boxes", "scores", "offsets", "level")))


def propose(cands: Boxes) -> Boxes:
    """NMS within each scale, then across scales; P-Net's offsets applied; squared."""
    kept = cands.take(nms(cands.boxes, cands.scores, NMS_WITHIN_SCALE, groups=cands.level))
    kept = kept.take(nms(kept.boxes, kept.scores, NMS_ACROSS_SCALES))
    return Boxes(square(regress(kept.boxes, kept.offsets)), kept.scores, level=kept.level)


def rnet_scores(rnet: RNet, image: torch.Tensor, proposals: Boxes) -> Boxes:
    """R-Net's face probability and offsets for every proposal (before its threshold)."""
    if not len(proposals):
        return _empty(image)
    scores, offsets = rnet(normalise(crop_boxes(image, proposals.boxes, INPUT_SIZE["rnet"])))
    return Boxes(proposals.boxes, scores, offsets)


def refine(scored: Boxes, threshold: float) -> Boxes:
    """R-Net's proposals scoring above ``threshold``, after NMS, regressed and squared."""
    passed = scored.take(torch.nonzero(scored.scores > threshold)[:, 0])
    kept = passed.take(nms(passed.boxes, passed.scores, NMS_RNET))
    return Boxes(square(regress(kept.boxes, kept.offsets)), kept.scores)


def onet_scores(onet: ONet, image: torch.Tensor, refined: Boxes) -> Boxes:
    """O-Net's face probability, offsets and landmarks (in the input frame, placed in the box O-Net
    read) for every refined box (before its threshold)."""
    if not len(refined):
        return _empty(image, landmarks=True)
    scores, offsets, points = onet(normalise(crop_boxes(image, refined.boxes, INPUT_SIZE["onet"])))
    b = refined.boxes
    wh = (b[:, 2:] - b[:, :2])[:, None, :]
    landmarks = b[:, None, :2] + torch.stack([points[:, :5], points[:, 5:]], 2) * wh
    return Boxes(b, scores, offsets, landmarks=landmarks)


def finish(scored: Boxes, threshold: float) -> Boxes:
    """O-Net's boxes scoring above ``threshold``, regressed, after NMS over the smaller box."""
    passed = scored.take(torch.nonzero(scored.scores > threshold)[:, 0])
    moved = Boxes(regress(passed.boxes, passed.offsets), passed.scores, landmarks=passed.landmarks)
    return moved.take(nms(moved.boxes, moved.scores, NMS_ONET, mode="min"))


def detect(nets: tuple[PNet, RNet, ONet], image: torch.Tensor, min_face: float = 20.0,
           thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7), factor: float = FACTOR) -> Detection:
    """The whole cascade on ``image`` (1, 3, H, W) RGB in [0, 1]; every stage's boxes."""
    pnet, rnet, onet = nets
    levels = pyramid(pnet, image, min_face, factor)
    cands = candidates(levels, thresholds[0], image.shape[2], image.shape[3])
    proposals = propose(cands)
    refined = refine(rnet_scores(rnet, image, proposals), thresholds[1])
    return Detection(levels, cands, proposals, refined, finish(onet_scores(onet, image, refined), thresholds[2]))
