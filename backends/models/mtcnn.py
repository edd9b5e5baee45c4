"""MTCNN's three networks (Zhang et al. 2016, "Joint face detection and alignment using multi-task
cascaded convolutional networks"), written from the paper's architecture figure.

P-Net is fully convolutional: a 12 x 12 window goes to one output cell (face / not-face scores and a
box correction), so on a whole image it gives a heatmap with stride 2. R-Net reads 24 x 24 crops
and O-Net 48 x 48 crops; O-Net also regresses five landmarks (left eye, right eye, nose, left and
right mouth corners, as seen in the image). Inputs are RGB scaled as (255 x - 127.5) / 128.

The pretrained weights are converted once by ``assets/convert_mtcnn.py`` (MIT, see
assets/weights/MTCNN-LICENSE.txt); their state-dict keys are the attribute names below. The fully
connected layers were trained on features flattened in (width, height, channel) order, hence the
permute before each flatten.
"""

from __future__ import annotations

from pathlib import Path
from typing import Union

import torch
import torch.nn.functional as F
from torch import nn

from backends.models.cache import cached_model
from backends.models.weights import WEIGHTS_DIR, load_weights

NETS = ("pnet", "rnet", "onet")
INPUT_SIZE = {"pnet": 12, "rnet": 24, "onet": 48}


def shipped_path(net: str) -> Path:
    return WEIGHTS_DIR / f"mtcnn_{net}.safetensors"


def normalise(rgb: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB in [0, 1] to the networks' input scale, (255 x - 127.5) / 128."""
    return (rgb * 255.0 - 127.5) * 0.0078125


def _flatten_whc(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, W * H * C), the order the dense layers were trained on."""
    return x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)


class PNet(nn.Module):
    """Proposal net: 12 x 12 window -> face probability (2 logits) and box offsets (4), stride 2."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, 3)
        self.prelu1 = nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(10, 16, 3)
        self.prelu2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, 3)
        self.prelu3 = nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, 1)
        self.conv4_2 = nn.Conv2d(32, 4, 1)

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every intermediate map by layer name (after its activation), for the feature panels."""
        out = {}
        x = out["conv1"] = self.prelu1(self.conv1(x))
        x = out["pool1"] = self.pool1(x)
        x = out["conv2"] = self.prelu2(self.conv2(x))
        out["conv3"] = self.prelu3(self.conv3(x))
        return out

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3, H, W) normalised -> face probability (N, h, w), offsets (N, 4, h, w)."""
        x = self.features(x)["conv3"]
        return F.softmax(self.conv4_1(x), dim=1)[:, 1], self.conv4_2(x)


class RNet(nn.Module):
    """Refine net: 24 x 24 crops -> face probability (N,) and box offsets (N, 4)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 28, 3)
        self.prelu1 = nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(28, 48, 3)
        self.prelu2 = nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(48, 64, 2)
        self.prelu3 = nn.PReLU(64)
        self.dense4 = nn.Linear(576, 128)
        self.prelu4 = nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        x = self.prelu4(self.dense4(_flatten_whc(x)))
        return F.softmax(self.dense5_1(x), dim=1)[:, 1], self.dense5_2(x)


class ONet(nn.Module):
    """Output net: 48 x 48 crops -> face probability (N,), box offsets (N, 4) and landmarks (N, 10):
    five x fractions of the box width, then five y fractions of its height."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3)
        self.prelu1 = nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.prelu2 = nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(64, 64, 3)
        self.prelu3 = nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4 = nn.Conv2d(64, 128, 2)
        self.prelu4 = nn.PReLU(128)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = self.prelu5(self.dense5(_flatten_whc(x)))
        return F.softmax(self.dense6_1(x), dim=1)[:, 1], self.dense6_2(x), self.dense6_3(x)


CLASSES = {"pnet": PNet, "rnet": RNet, "onet": ONet}


def _load(net: str):
    def loader(path: Path) -> nn.Module:
        model = CLASSES[net]()
        model.load_state_dict(load_weights(path))  # strict: every key, every shape
        return model.eval().requires_grad_(False)

    loader.__qualname__ = f"mtcnn_{net}"  # the cache tells the three loaders apart by this
    return loader


def load_mtcnn(device: Union[torch.device, str, None] = None) -> tuple[PNet, RNet, ONet]:
    """The three shipped networks (sha256-checked, cached, in eval mode without gradients)."""
    return tuple(cached_model(shipped_path(n), _load(n), device) for n in NETS)  # type: ignore[return-value]
