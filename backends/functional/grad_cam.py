"""Grad-CAM (Selvaraju et al., 2017): where a convolutional layer's evidence for a class lies.

The map is ReLU(sum_c alpha_c A_c) with alpha_c the spatial mean of d(score)/dA_c. Callers
capture the activations A and their gradients themselves (a forward hook and ``retain_grad`` or
``torch.autograd.grad``), so the core is a pure function of two tensors and works for any model.
Tensors are NCHW; the map is not normalised (its scale is the evidence's, so two classes compare).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def grad_cam(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """Class activation map from a layer's activations and the class score's gradient.

    Args:
        activations: (B, C, h, w) the layer's output.
        gradients: (B, C, h, w) d(class score)/d(activations), the same shape.
    Returns:
        (B, h, w) ReLU of the channel sum of activations weighted by the spatial mean of the
        gradients; zero where the weighted evidence is negative, all zero for zero gradients.
    """
    if activations.dim() != 4 or activations.shape != gradients.shape:
        raise ValueError(f"activations and gradients must be the same (B, C, h, w) shape, "
                         f"got {tuple(activations.shape)} and {tuple(gradients.shape)}")
    weights = gradients.mean(dim=(2, 3), keepdim=True)
    return torch.relu((weights * activations).sum(dim=1))


def upsample_cam(cam: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A (B, h, w) map resized bilinearly to (B, H, W) = ``size`` (pixel centres aligned, so a
    cell's value lands over the image region it summarises)."""
    if cam.dim() != 3:
        raise ValueError(f"cam must be (B, h, w), got {tuple(cam.shape)}")
    height, width = int(size[0]), int(size[1])
    if height < 1 or width < 1:
        raise ValueError(f"size must be positive (H, W), got {tuple(size)}")
    return F.interpolate(cam[:, None], size=(height, width), mode="bilinear", align_corners=False)[:, 0]
