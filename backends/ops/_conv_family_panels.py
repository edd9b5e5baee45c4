"""What the convolution family draws: output mosaics, every variant side by side, the input
channels, the connectivity of input to output channels by group, the clicked pixel's receptive
field and the products that make its value, and the cost of each variant.

Maps are at the working resolution of the feature bank; points are placed on the input frame
(pixel-index coordinates, x right, y down)."""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from backends.features import robust_max
from backends.imaging import image_grid, upscale_nearest
from backends.layers import INPUT, BarsLayer, FeatureMapsLayer, ImageLayer, PointSet, PointsLayer
from backends.ops._conv_family_weights import DEPTHWISE_KERNELS, TITLES, VARIANTS

# The bank channels fed to every variant: (bank label, tile name). Four orientations of one
# octave, then colour, brightness and texture: with 2 groups, edges and the rest; with 4, pairs.
INPUTS = (("horizontal, octave 2", "horiz"), ("45° diagonal, octave 2", "45°"), ("vertical, octave 2", "vert"),
          ("135° diagonal, octave 2", "135°"), ("red", "red"), ("blue", "blue"), ("light", "light"),
          ("texture fine", "texture"))
GRID_COLUMNS = 8  # output channels per variant in the side-by-side grid
GRID_TILE = 64  # their tiles' longer side at most this, working pixels reduced by a whole factor
CELL_H, CELL_W = 10, 22  # connectivity cell, pixels (wide: room for the input names), a 1 px black line between cells
CONTRIBUTION_TILE = 24  # a receptive-field tile's side, pixels, whatever k
NOT_CONNECTED = (0.22, 0.22, 0.24)
COST_SERIES = ("parameters", "multiply-adds", "measured time")


def symmetric_hi(x: torch.Tensor) -> float:
    """The robust largest |value| of x, for a colour scale symmetric about 0."""
    return float(robust_max(x.abs().flatten()))


def output_labels(variant: str, dense_w: torch.Tensor, short: tuple[str, ...], multiplier: int) -> tuple[str, ...]:
    """Tile names: depthwise 'input kernel' ('red d/dx'); otherwise the output number and the input
    channel that weighs most in it ('3 vert')."""
    if variant == "depthwise":
        return tuple(f"{short[o // multiplier]} {DEPTHWISE_KERNELS[o % multiplier][1]}" for o in range(dense_w.shape[0]))
    energy = dense_w.pow(2).sum((2, 3))
    return tuple(f"{o + 1} {short[int(energy[o].argmax())]}" for o in range(dense_w.shape[0]))


def output_layer(variant: str, out: torch.Tensor, labels: tuple[str, ...], params_text: str) -> FeatureMapsLayer:
    hi = symmetric_hi(out)
    how = ("each tile: an input channel through one named kernel (blur, d/dx, d/dy, Laplacian)" if variant == "depthwise"
           else "each tile: one output channel, named by its number and the input channel that weighs most in it")
    return FeatureMapsLayer("Output", out[0], labels=labels, levels=(-hi, hi), colormap="CET-D1",
                            caption=f"{TITLES[variant]} ({params_text}): {how}; blue negative, red positive, "
                                    f"the strongest 0.5% beyond ±{hi:.2g} saturate")


def variants_grid(outputs: dict[str, torch.Tensor]) -> ImageLayer:
    """Rows: the six variants; columns: their first output channels, each row on its own scale."""
    tiles = []
    for v in VARIANTS:
        out = outputs[v][:, :GRID_COLUMNS]  # every variant has at least C_in = 8 outputs
        h, w = out.shape[-2:]
        f = max(1, -(-max(h, w) // GRID_TILE))
        small = F.avg_pool2d(out, f, ceil_mode=True) if f > 1 else out  # area means, f x f
        tiles.append(small[0] / max(symmetric_hi(outputs[v]), 1e-6))
    grid = image_grid(torch.cat(tiles)[:, None], GRID_COLUMNS, gap=2, fill=float("nan"))[0]
    return ImageLayer("All variants", grid, levels=(-1.0, 1.0), colormap="CET-D1",
                      row_labels=VARIANTS,
                      column_labels=tuple(str(i + 1) for i in range(GRID_COLUMNS)),
                      axis_titles=("output channel", ""),
                      caption="the same input through every variant: the first output channels of each, each row scaled "
                              "to its own strongest response (blue negative, red positive)")


def inputs_layer(x: torch.Tensor, short: tuple[str, ...], long: tuple[str, ...]) -> FeatureMapsLayer:
    return FeatureMapsLayer("Input channels", x[0], labels=short, levels=(0.0, 1.0), colormap="inferno",
                            caption=f"the {len(short)} channels every variant reads, from the feature bank: "
                                    + ", ".join(long) + f" (at {x.shape[-1]}x{x.shape[-2]} px)")


def group_members(groups: int, short: tuple[str, ...]) -> str:
    """Which inputs each group holds, in words: 'group 1: horiz to 135°; group 2: red to texture'."""
    per = len(short) // groups
    parts = [short[j * per: (j + 1) * per] for j in range(groups)]
    return "; ".join(f"group {j + 1}: " + (" to ".join((p[0], p[-1])) if len(p) > 2 else ", ".join(p))
                     for j, p in enumerate(parts))


def connectivity_picture(dense_w: torch.Tensor, groups: int) -> np.ndarray:
    """(C_out * (CELL_H + 1) - 1, C_in * (CELL_W + 1) - 1) int: per (output, input) cell, 0 when the
    input does not reach the output, 1 + the input's group when it does; -1 (black) between cells."""
    conn = dense_w.reshape(dense_w.shape[0], dense_w.shape[1], -1).ne(0).any(-1).cpu().numpy()
    c_out, c_in = conn.shape
    group = np.arange(c_in) // (c_in // groups)
    cells = np.where(conn, 1 + group[None, :], 0)
    out = np.full((c_out * (CELL_H + 1) - 1, c_in * (CELL_W + 1) - 1), -1, np.int64)
    for o in range(c_out):
        for i in range(c_in):
            out[o * (CELL_H + 1): o * (CELL_H + 1) + CELL_H, i * (CELL_W + 1): i * (CELL_W + 1) + CELL_W] = cells[o, i]
    return out


def connectivity_layer(variant: str, dense_w: torch.Tensor, groups: int, shuffle: bool,
                       out_labels: tuple[str, ...], short: tuple[str, ...]) -> ImageLayer:
    names = ("all inputs",) if groups == 1 else tuple(f"group {j + 1}" for j in range(groups))
    members = f" ({group_members(groups, short)})" if 1 < groups < len(short) else ""
    palette = np.concatenate([np.asarray([NOT_CONNECTED], np.float32), _group_palette(groups)])
    conn = dense_w.reshape(dense_w.shape[0], dense_w.shape[1], -1).ne(0).any(-1)
    reads = int(conn.sum(1).max())
    reached = reads // (dense_w.shape[1] // groups)  # input groups one output reads
    per = dense_w.shape[0] // groups
    pair = ("the shuffle hands each second-layer group channels from every first-layer group, so every output reads "
            "every input" if reached == groups else
            f"the shuffle hands each second-layer group channels from {reached} of the {groups} first-layer groups "
            f"only: {per} channels per group are fewer than {groups} groups")
    what = {
        "standard": "every output reads every input",
        "pointwise": "every output reads every input, at one pixel",
        "depthwise": "each output reads one input channel",
        "separable": "the pointwise layer mixes the depthwise outputs, so every output reads every input",
        "group": ("each output reads its own group only; the shuffle interleaves the groups' outputs" if shuffle
                  else "each output reads its own group only, outputs in group order"),
        "group pair": (pair if shuffle else
                       "without the shuffle the second layer's groups see their own group only: the groups never mix"),
    }[variant]
    if variant in ("group", "group pair") and groups == 1:
        what = "one group: every output reads every input (a standard convolution)"
    return ImageLayer("Connectivity", connectivity_picture(dense_w, groups), categories=("no link",) + names,
                      palette=palette, row_labels=out_labels if len(out_labels) <= 16 else (),
                      column_labels=short, axis_titles=("input channel", "output channel"),
                      caption=f"{TITLES[variant]}: which input channels reach which output channels, coloured by the "
                              f"input's group{members}; {what} (at most {reads} of {dense_w.shape[1]})")


def _group_palette(groups: int) -> np.ndarray:
    base = np.array([(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
                     (140, 86, 75), (227, 119, 194), (188, 189, 34)], np.float32) / 255.0
    return base[np.arange(groups) % len(base)]


def contributions(dense_w: torch.Tensor, x: torch.Tensor, channel: int, q: tuple[int, int]) -> torch.Tensor:
    """(C_in, k, k): weight x input of every tap that makes output ``channel`` at working pixel q =
    (x, y); their sum is that output value (zero padding outside the map)."""
    k = dense_w.shape[-1]
    r = k // 2
    padded = F.pad(x[0], (r, r, r, r))
    window = padded[:, q[1]: q[1] + k, q[0]: q[0] + k]
    return dense_w[channel] * window


def receptive_field_layers(variant: str, dense_w: torch.Tensor, x: torch.Tensor, channel: int, q: tuple[int, int],
                           frame: tuple[int, int], out_label: str, short: tuple[str, ...],
                           note: str) -> tuple[PointsLayer, FeatureMapsLayer]:
    """The clicked output pixel's taps on the input frame, and the products that sum to its value."""
    k = dense_w.shape[-1]
    h, w = x.shape[-2:]
    sx, sy = frame[0] / w, frame[1] / h
    prod = contributions(dense_w, x, channel, q)
    reaches = dense_w[channel].reshape(dense_w.shape[1], -1).ne(0).any(-1)
    js = torch.arange(k, dtype=torch.float32) - k // 2
    ys, xs = torch.meshgrid(q[1] + js, q[0] + js, indexing="ij")
    taps = torch.stack([(xs.flatten() + 0.5) * sx - 0.5, (ys.flatten() + 0.5) * sy - 0.5], 1)
    weight = dense_w[channel].abs().sum(0).flatten()
    qf = ((q[0] + 0.5) * sx - 0.5, (q[1] + 0.5) * sy - 0.5)
    box = ((q[0] - k // 2) * sx, (q[1] - k // 2) * sy, k * sx, k * sy)
    side = max(box[2], box[3])
    focus = (qf[0] + 0.5 - 4 * side, qf[1] + 0.5 - 4 * side, 8.0 * side, 8.0 * side)
    names = [short[i] for i in range(len(short)) if bool(reaches[i])]
    points = PointsLayer(
        "Receptive field",
        sets=(PointSet(taps, color=(255, 90, 60), size=8.0, label="taps", join_to=qf, values=weight / weight.max().clamp_min(1e-12)),
              PointSet(np.array([qf], np.float32), color=(60, 220, 255), size=11.0, label="clicked pixel")),
        background=INPUT, boxes=(box,), focus=focus,
        caption=f"output {out_label} of {TITLES[variant]} at the clicked pixel reads a {k}x{k} window of the "
                f"{w}x{h} working maps ({k * sx:.0f}x{k * sy:.0f} input px), from {len(names)} of {len(short)} input "
                f"channels ({', '.join(names)}); brightness: the taps' summed |weight|{note}")
    shown = prod.clone()
    shown[~reaches] = float("nan")
    scale = max(1, CONTRIBUTION_TILE // k)
    hi = float(prod.abs().max()) or 1.0
    value = float(prod.sum())
    per = prod.sum((1, 2))
    order = torch.argsort(per.abs(), descending=True)[:2].tolist()
    top = " and ".join(f"{short[i]} ({float(per[i]):+.3f})" for i in order if bool(reaches[i]))
    tiles = FeatureMapsLayer(
        "Contributions", upscale_nearest(shown, scale), labels=short, levels=(-hi, hi), colormap="CET-D1",
        caption=f"weight x input for every tap of output {out_label} at the clicked pixel, one tile per input channel: "
                f"they sum to its value {value:+.3f}; largest: {top or 'none'}; blank tiles: inputs it does not read")
    return points, tiles


def cost_layer(counts: dict[str, tuple[int, int]], times: Optional[dict[str, float]], k: int) -> BarsLayer:
    """Parameters, multiply-adds and measured time of every variant, in % of the standard convolution."""
    labels = tuple(TITLES[v] for v in VARIANTS)
    p0, m0 = counts["standard"]
    series = {COST_SERIES[0]: np.array([100.0 * counts[v][0] / p0 for v in VARIANTS], np.float32),
              COST_SERIES[1]: np.array([100.0 * counts[v][1] / m0 for v in VARIANTS], np.float32)}
    caption = f"for the same input and output widths, in % of the standard {k}x{k} convolution"
    if times is not None:
        t0 = max(times["standard"], 1e-6)
        series[COST_SERIES[2]] = np.array([100.0 * times[v] / t0 for v in VARIANTS], np.float32)
        caption += "; time: the fastest of a few runs on this machine (fewer multiply-adds is not always faster)"
    return BarsLayer("Cost", labels, series, value_label="% of standard", horizontal=True,
                     caption=caption)
