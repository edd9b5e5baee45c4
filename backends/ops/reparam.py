"""Structural reparameterization: a RepVGG, ACNet or DiracNet block on the image's colour
channels, as it trains (several branches, each with its batch norm) and as it runs at inference
(one 3 x 3 convolution). The panels show each branch's kernel with its batch norm folded in, the
fused kernel they add up to, where the two outputs differ (float rounding only), and how long each
takes here. The numerics are :mod:`backends.functional.reparam`."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from backends.functional.reparam import (
    BLOCKS,
    Branch,
    branch_kernel,
    branched_forward,
    fuse,
    fused_forward,
    random_block,
)
from backends.imaging import image_grid, resize_long_side
from backends.layers import BarsLayer, HeatmapLayer, ImageLayer, MetricsLayer, Result
from backends.params import ChoiceParam, FloatParam, SeedParam
from backends.registry import Operator, OperatorSpec, Query, register
from backends.timing import StageTimer

CHANNELS = ("red", "green", "blue")
GROUPS = {"full": 1, "depthwise": 3}
BN_BLOCKS = (("block", ("repvgg", "acnet")),)
BLOCK_INPUTS = ("block", "groups", "seed", "mean_scale", "var_scale", "dirac_alpha", "precision")
TIMING_INPUTS = ("block", "groups", "precision")
REPEATS = 5  # timing runs of each form; the fastest counts
WORK_SIDE = 256  # the output and difference panels are computed with the longer side at most this
BRANCH_NAMES = {"repvgg": ("3x3", "1x1", "identity"), "acnet": ("3x3", "1x3", "3x1"), "diracnet": ("W", "identity")}
ROWS = ("R", "G", "B")  # output channels: short, so they fit left of a small picture
BRANCHES_IN_WORDS = {
    "repvgg": "a 3x3 and a 1x1 convolution and the identity, each with batch norm",
    "acnet": "a 3x3, a 1x3 and a 3x1 convolution, each with batch norm",
    "diracnet": "the normalized 3x3 weight times beta plus alpha times the identity",
}
DTYPES = {"float32": torch.float32, "float64": torch.float64}
TOLERANCE = {"float32": 1e-5, "float64": 1e-10}  # what the tests hold the fused block to


@register
class StructuralReparameterization(Operator):
    spec = OperatorSpec(
        name="reparam",
        title="Structural reparameterization",
        family="Convolution",
        description=(
            "A block trains as several branches (RepVGG: 3x3, 1x1 and identity, each with batch norm; ACNet: "
            "3x3, 1x3 and 3x1; DiracNet: W plus the identity) and runs at inference as one 3x3 convolution: "
            "batch norm folds into each kernel, the small kernels pad to 3x3, and the kernels add up. The two "
            "forms differ only by float rounding, and the fused one is faster."
        ),
        params=(
            ChoiceParam("block", "repvgg", BLOCKS, help="Which multi-branch block is fused: RepVGG, ACNet or DiracNet."),
            ChoiceParam("groups", "full", tuple(GROUPS), help="full: every output channel reads all three colour "
                        "channels; depthwise: each channel only its own (groups = 3)."),
            FloatParam("mean_scale", 0.2, 0.0, 2.0, step=0.05, help="Spread of the batch norms' running means "
                       "(mean = this x a normal sample).", enabled_when=BN_BLOCKS),
            FloatParam("var_scale", 0.5, 0.0, 3.0, step=0.05, help="Spread of the running variances on a log scale "
                       "(var = exp(this x a normal sample)); 0 gives variance 1.", enabled_when=BN_BLOCKS),
            FloatParam("dirac_alpha", 1.0, 0.0, 2.0, step=0.05, help="DiracNet: the weight of the identity.",
                       enabled_when=(("block", ("diracnet",)),)),
            SeedParam("seed", 0, help="Seed of the kernels and of the batch-norm statistics and affine weights."),
            ChoiceParam("precision", "float32", tuple(DTYPES), help="Arithmetic of both forms: float64 shows the "
                        "difference is rounding (about 1e-16 instead of 1e-7)."),
        ),
        uses_query=False,
        primary="Output",
    )
    memo_capacity = 12
    edit = "resized"

    def run(self, image: torch.Tensor, params: Mapping[str, Any], query: Query) -> Result:
        timer = StageTimer()
        stage = self.memo.stage
        with timer("fuse"):
            branches = stage("block", params, BLOCK_INPUTS, lambda: _block(params, image.device))
            weight, bias = stage("fused", params, BLOCK_INPUTS, lambda: fuse(branches, 3, GROUPS[params["groups"]]))
        small = stage("work image", params, (), lambda: resize_long_side(image, WORK_SIDE))
        with timer("outputs"):
            shown, diff = stage("outputs", params, BLOCK_INPUTS, lambda: _outputs(small, branches, weight, bias, params))
        h, w = image.shape[2:]
        extent = None if small.shape[2:] == image.shape[2:] else (0.0, 0.0, float(w), float(h))
        at = "" if extent is None else f" (at {small.shape[3]}x{small.shape[2]} px)"
        layers = (
            ImageLayer("Output", shown, levels=(0.0, 1.0), extent=extent,
                       caption=f"the fused 3x3 convolution of the image{at}, before any activation; each colour channel "
                               "stretched to its 0.5-99.5% range"),
            stage("branch panel", params, BLOCK_INPUTS, lambda: _branch_panel(branches, params)),
            stage("fused panel", params, BLOCK_INPUTS, lambda: _fused_panel(weight, bias, params)),
            _difference_panel(diff, params, extent, at),
        )
        values = _metrics(branches, weight, bias, diff, params)
        timing_key = self.memo.stage_key("timing", params, TIMING_INPUTS)

        def with_timing() -> Result:
            with timer("timing"):
                ms = stage("timing", params, TIMING_INPUTS, lambda: _measure(image, params))
            return Result(layers + (_time_panel(ms, image, params),
                                    MetricsLayer("Metrics", {**values, **_speed(ms), **timer.metrics()})))

        if timing_key in self.memo:
            return with_timing()
        # The timing runs each form several times: once per block, groups and precision, when the slider rests.
        return Result(layers + (MetricsLayer("Metrics", {**values, **timer.metrics()}),), settle=with_timing,
                      pending=("Time",))


def _block(params: Mapping[str, Any], device: torch.device) -> tuple[Branch, ...]:
    return random_block(params["block"], 3, GROUPS[params["groups"]], params["seed"], float(params["mean_scale"]),
                        float(params["var_scale"]), float(params["dirac_alpha"]), DTYPES[params["precision"]], device)


def _outputs(image: torch.Tensor, branches: tuple[Branch, ...], weight: torch.Tensor, bias: torch.Tensor,
             params: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """(the fused output stretched for display (H, W, 3), |branched - fused| per pixel, the
    largest of the channels (H, W))."""
    dtype, groups = DTYPES[params["precision"]], GROUPS[params["groups"]]
    x = image.to(dtype)
    branched = branched_forward(x, branches, groups)
    fused = fused_forward(x, weight, bias, groups)
    diff = (branched - fused).abs().amax(1)[0]
    return stretch(fused[0].float()), diff


def stretch(x: torch.Tensor, low: float = 0.005, high: float = 0.995) -> torch.Tensor:
    """(C, H, W) -> (H, W, C) in [0, 1]: each channel mapped from its ``low`` to ``high`` quantile
    (on a strided sample of about 16k values) to 0 and 1, clipped."""
    c = x.shape[0]
    flat = x.reshape(c, -1)
    sample = flat[:, :: max(1, flat.shape[1] // 16384)]
    q = torch.quantile(sample, torch.tensor([low, high], dtype=x.dtype, device=x.device), dim=1)  # (2, C)
    lo, hi = q[0].view(c, 1, 1), q[1].view(c, 1, 1)
    return ((x - lo) / (hi - lo).clamp_min(1e-12)).clamp(0, 1).permute(1, 2, 0)


def kernel_matrix(kernel: torch.Tensor) -> np.ndarray:
    """(C_out, C_in / g, k, k) -> one picture: output channels down, input channels across, each
    k x k kernel a tile, a transparent (NaN) pixel between tiles."""
    c_out, per, k, _ = kernel.shape
    tiles = kernel.detach().double().cpu().reshape(c_out * per, 1, k, k)
    return image_grid(tiles, columns=per, gap=1, fill=float("nan"))[0].numpy()


def _symmetric(a: np.ndarray) -> tuple[float, float]:
    hi = float(np.nanmax(np.abs(a))) or 1.0
    return (-hi, hi)


def _branch_panel(branches: tuple[Branch, ...], params: Mapping[str, Any]) -> ImageLayer:
    """The branches' kernels side by side, each a kernel matrix (:func:`kernel_matrix`), two
    transparent pixels between branches, so the rows are the output channels in every branch."""
    groups = GROUPS[params["groups"]]
    kernels = [branch_kernel(b, 3, groups, like=branches[0].weight)[0] for b in branches]
    tiles = torch.from_numpy(np.stack([kernel_matrix(k) for k in kernels]))[:, None]
    picture = image_grid(tiles, columns=len(kernels), gap=2, fill=float("nan"))[0].numpy()
    dirac = params["block"] == "diracnet"
    folded = ("W scaled by beta / |W|, the identity by alpha" if dirac
              else "each with its batch norm folded in (w · gamma / sqrt(var + eps)), zero-padded to 3x3")
    inside = ", in each input channels R, G, B across" if params["groups"] == "full" else ""
    return ImageLayer("Branch kernels", picture, levels=_symmetric(picture), colormap="CET-D1",
                      row_labels=ROWS, column_labels=BRANCH_NAMES[params["block"]],
                      caption=f"the branches as 3x3 kernels, {folded}; rows: output channel{inside}")


def _fused_panel(weight: torch.Tensor, bias: torch.Tensor, params: Mapping[str, Any]) -> ImageLayer:
    picture = kernel_matrix(weight)
    full = params["groups"] == "full"
    return ImageLayer(
        "Fused kernel", picture, levels=_symmetric(picture), colormap="CET-D1",
        row_labels=ROWS, column_labels=ROWS if full else ("own channel",),
        axis_titles=("input channel" if full else "", ""),
        caption=f"the one convolution inference runs: the sum of the branch kernels ({BRANCHES_IN_WORDS[params['block']]} "
                f"before fusing), rows: output channel; the folded shifts add up to its bias")


def _difference_panel(diff: torch.Tensor, params: Mapping[str, Any], extent, at: str) -> HeatmapLayer:
    top = float(diff.max())
    tol = TOLERANCE[params["precision"]]
    return HeatmapLayer("Branched − fused", diff.float(), levels=(0.0, max(top, 1e-300)), colormap="inferno",
                        extent=extent,
                        caption=f"|branched − fused| per pixel (largest channel){at}: at most {top:.2g}, "
                                f"{params['precision']} rounding (the tests hold it under {tol:g})")


def _measure(image: torch.Tensor, params: Mapping[str, Any]) -> dict[str, float]:
    """Fastest of REPEATS runs of each form on this image, in ms, after one warm-up run."""
    branches = _block(params, image.device)
    groups = GROUPS[params["groups"]]
    weight, bias = fuse(branches, 3, groups)
    x = image.to(DTYPES[params["precision"]])
    best = {"branched": float("inf"), "fused": float("inf")}
    for i in range(REPEATS + 1):
        timer = StageTimer()
        with timer("branched"):
            branched_forward(x, branches, groups)
            _sync(image)
        with timer("fused"):
            fused_forward(x, weight, bias, groups)
            _sync(image)
        if i:  # the first run warms caches up
            best = {k: min(v, timer.ms[k]) for k, v in best.items()}
    return best


def _sync(image: torch.Tensor) -> None:
    if image.device.type == "cuda":
        torch.cuda.synchronize(image.device)


def _time_panel(ms: dict[str, float], image: torch.Tensor, params: Mapping[str, Any]) -> BarsLayer:
    n = len(BRANCH_NAMES[params["block"]])
    h, w = image.shape[2:]
    return BarsLayer("Time", ("branched (" + str(n) + " branches)", "fused (one 3x3 conv)"),
                     {"time": np.array([ms["branched"], ms["fused"]], np.float32)}, value_label="ms", horizontal=True,
                     caption=f"fastest of {REPEATS} runs of each form on this {w}x{h} image, {params['precision']}, "
                             f"measured here once per block, groups and precision")


def _speed(ms: dict[str, float]) -> dict[str, Any]:
    return {"branched ms (run)": round(ms["branched"], 3), "fused ms (run)": round(ms["fused"], 3),
            "fused speed-up": f"{ms['branched'] / max(ms['fused'], 1e-9):.1f}x"}


def _metrics(branches: tuple[Branch, ...], weight: torch.Tensor, bias: torch.Tensor, diff: torch.Tensor,
             params: Mapping[str, Any]) -> dict[str, Any]:
    learned = sum(b.weight.numel() for b in branches if b.weight is not None)
    learned += sum(2 * 3 for b in branches if b.bn is not None) + sum(3 for b in branches if b.scale is not None)
    return {
        "block": params["block"],
        "branches": len(branches),
        "weights (branched)": learned,
        "weights (fused)": weight.numel() + bias.numel(),
        "largest |branched − fused|": f"{float(diff.max()):.2g}",
        "fused bias": ", ".join(f"{name} {float(b):+.3f}" for name, b in zip(CHANNELS, bias)),
    }
