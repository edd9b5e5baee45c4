"""Reusable numeric cores of the operators: NCHW torch functions with torch's conventions and,
where a network would use one, a thin ``nn.Module`` twin (torchvision / kornia naming).

One module per family: :mod:`.deformable` (``deform_conv2d``, ``DeformConv2d``),
:mod:`.global_warp` (the deformable convolution of a global warp from one resampled image),
:mod:`.dilated` (``dilated_conv2d``, ``DilatedConv2d``, receptive fields), :mod:`.affine`
(affine maps, theta, ``AffineTransformer``), :mod:`.tps` (thin-plate splines, ``TPSGridGen``),
:mod:`.coords` (pixel and normalized coordinates), :mod:`.filters` (blur, structure tensor),
:mod:`.kernels` (the named kernel bank), :mod:`.attention`, :mod:`.squeeze_excitation` and
:mod:`.optim`. Nothing here knows about layers, parameters or captions;
this package imports only torch, numpy, cv2, itself and :mod:`backends.imaging`.
"""

from backends.functional.affine import AffineTransformer, affine_transform
from backends.functional.deformable import DeformConv2d, deform_conv2d
from backends.functional.dilated import DilatedConv2d, dilated_conv2d
from backends.functional.tps import TPSGridGen, tps_grid

__all__ = [
    "AffineTransformer",
    "DeformConv2d",
    "DilatedConv2d",
    "TPSGridGen",
    "affine_transform",
    "deform_conv2d",
    "dilated_conv2d",
    "tps_grid",
]
