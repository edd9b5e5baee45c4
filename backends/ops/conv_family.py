"""The convolution family side by side on one image: standard, depthwise (with a channel
multiplier), pointwise, group convolution with ShuffleNet's channel shuffle, depthwise separable
(depthwise then pointwise), and a ShuffleNet pair (group conv, shuffle, group 1 x 1), all on the
same named channels of the feature bank.

Panels: the chosen variant's output channels, every variant side by side, the input channels,
which input channels feed which outputs (groups and the shuffle), the clicked pixel's receptive
field and the products that make its value, and parameters, multiply-adds and measured time.
Cores: :mod:`backends.functional.conv_family`; weights and passes: ``_conv_family_weights``."""

from __future__ import annotations

from typing import Any, Mapping

import torch

from backends.features import feature_bank
from backends.layers import MetricsLayer, Result
from backends.ops._conv_family_panels import (
    INPUTS,
    connectivity_layer,
    cost_layer,
    inputs_layer,
    output_labels,
    output_layer,
    receptive_field_layers,
    variants_grid,
)
from backends.ops._conv_family_weights import (
    TITLES,
    VARIANTS,
    FamilyWeights,
    dense,
    family_weights,
    forward,
    input_groups,
    output_channels,
    parameter_count,
)
from backends.params import BoolParam, ChoiceParam, IntParam, ParamError, SeedParam
from backends.registry import Operator, OperatorSpec, Query, query_point, register
from backends.timing import StageTimer

__all__ = ["ConvolutionFamily", "INPUTS", "VARIANTS", "family_weights", "forward", "dense", "parameter_count"]

WORK_SIDE = 128  # the feature bank and every variant run with the longer side at most this
TIMING_RUNS = 3  # the cost panel's time: the fastest of this many runs of each variant
WEIGHT_INPUTS = ("kernel_size", "out_channels", "multiplier", "groups", "shuffle", "seed")
GROUPED = (("groups", ("2", "4", "8")),)


@register
class ConvolutionFamily(Operator):
    spec = OperatorSpec(
        name="conv_family",
        title="Convolution family",
        family="Convolution",
        description=(
            "Standard, depthwise, pointwise, group (with ShuffleNet's channel shuffle) and depthwise separable "
            "convolutions on the same named feature channels: their outputs, which input channels feed which "
            "outputs, the receptive field of a clicked pixel, and what each costs in parameters, multiply-adds "
            "and time."
        ),
        params=(
            ChoiceParam("variant", "group", VARIANTS,
                        help="The variant shown large, traced in Connectivity and in the receptive field; 'group pair' "
                        "is ShuffleNet's: a k x k group conv, the channel shuffle, a 1 x 1 group conv."),
            ChoiceParam("kernel_size", "3", ("3", "5", "7"), help="k: taps per side of every k x k layer."),
            ChoiceParam("out_channels", "16", ("8", "16", "32"), help="C_out of every variant but the depthwise one."),
            IntParam("multiplier", 2, 1, 4, help="Depthwise channel multiplier m: each input channel gets m kernels "
                     "(blur, d/dx, d/dy, Laplacian), so the depthwise layer has C_in x m outputs."),
            ChoiceParam("groups", "2", ("1", "2", "4", "8"), help="g: groups of the group convolution (2: the four edge "
                        "channels and the other four; 8: one channel each)."),
            BoolParam("shuffle", True, help="ShuffleNet's channel shuffle after the group convolution.",
                      enabled_when=GROUPED),
            SeedParam("seed", 0, help="Seed of the standard, group and pointwise weights."),
            IntParam("channel", 1, 1, 32, help="The output channel whose receptive field and contributions are traced "
                     "(the variant's last one when it has fewer)."),
        ),
        primary="Output",
        tabs=(("variants", ("All variants", "Input channels")),
              ("wiring", ("Connectivity", "Receptive field", "Contributions")),
              ("cost", ("Cost", "Metrics"))),
    )
    memo_capacity = 12

    def run(self, image: torch.Tensor, params: Mapping[str, Any], query: Query) -> Result:
        timer = StageTimer()
        _, _, H, W = image.shape
        variant = params["variant"]
        k, c_out, m, g = int(params["kernel_size"]), int(params["out_channels"]), int(params["multiplier"]), int(params["groups"])
        with timer("feature bank"):  # cached per image
            x, short, long = self.memo.stage("inputs", params, (), lambda: _inputs(image))
        c_in = x.shape[1]
        if c_in % g:
            raise ParamError(f"groups: {g} groups do not divide the {c_in} input channels")
        with timer("variants"):
            weights = self.memo.stage("weights", params, WEIGHT_INPUTS, lambda: family_weights(
                c_in, c_out, k, m, g, bool(params["shuffle"]) and g > 1, params["seed"], x.device, x.dtype))
            outputs = self.memo.stage("outputs", params, WEIGHT_INPUTS,
                                      lambda: {v: forward(v, x, weights) for v in VARIANTS})
        h, w = x.shape[-2:]
        qx, qy = query_point(query, W, H)
        q = (min(w - 1, int((qx + 0.5) * w / W)), min(h - 1, int((qy + 0.5) * h / H)))
        dense_w = dense(variant, weights)
        labels = output_labels(variant, dense_w, short, m)
        n_out = output_channels(variant, c_in, c_out, m)
        channel = min(int(params["channel"]), n_out) - 1
        note = f" (channel {params['channel']} asked; this variant has {n_out})" if params["channel"] > n_out else ""
        kv = 1 if variant == "pointwise" else k
        with timer("receptive field"):
            points, tiles = receptive_field_layers(variant, dense_w, x, channel, q, (W, H), labels[channel], short, note)
        grid = self.memo.stage("grid", params, WEIGHT_INPUTS, lambda: variants_grid(outputs))
        # Every layer of every variant is stride 1 with 'same' padding: multiply-adds = parameters x h x w.
        counts = {v: (parameter_count(v, c_in, c_out, k, m, g), parameter_count(v, c_in, c_out, k, m, g) * h * w)
                  for v in VARIANTS}
        layers = (
            output_layer(variant, outputs[variant], labels, f"{kv}x{kv}, {c_in} -> {n_out} channels"
                         + (_grouping(variant, g, weights.shuffle) if variant in ("group", "group pair") else "")),
            grid,
            inputs_layer(x, short, long),
            connectivity_layer(variant, dense_w, input_groups(variant, weights), weights.shuffle, labels, short),
            points,
            tiles,
        )
        metrics = {
            "input channels C_in": c_in,
            "working size": f"{w} x {h}",
            **{f"{TITLES[v]}: parameters": counts[v][0] for v in VARIANTS},
            **{f"{TITLES[v]}: multiply-adds": counts[v][1] for v in VARIANTS},
            "shuffle order": _shuffle_text(weights, c_out),
            f"output {labels[channel]} at the clicked pixel": round(float(outputs[variant][0, channel, q[1], q[0]]), 4),
            **timer.metrics(),
        }
        timing_key = self.memo.stage_key("timing", params, WEIGHT_INPUTS)

        def with_cost() -> Result:
            times = self.memo.get(timing_key, lambda: _time_variants(x, weights))
            return Result(layers + (cost_layer(counts, times, k), MetricsLayer("Metrics", {
                **metrics, **{f"{TITLES[v]}: time ms": round(times[v], 3) for v in VARIANTS}})))

        if timing_key in self.memo:
            return with_cost()
        # A weight change: every panel now, the timing runs once the slider rests.
        return Result(layers + (MetricsLayer("Metrics", metrics),), settle=with_cost, pending=("Cost",))


def _inputs(image: torch.Tensor) -> tuple[torch.Tensor, tuple[str, ...], tuple[str, ...]]:
    """The named bank channels every variant reads, (1, C_in, h, w), with tile and long names."""
    bank = feature_bank(image, side=WORK_SIDE)
    index = [bank.labels.index(label) for label, _ in INPUTS]
    return bank.maps[:, index].contiguous(), tuple(s for _, s in INPUTS), tuple(lab for lab, _ in INPUTS)


def _time_variants(x: torch.Tensor, weights: FamilyWeights) -> dict[str, float]:
    """Milliseconds per variant on the working maps: the fastest of TIMING_RUNS runs."""
    best: dict[str, float] = {}
    for v in VARIANTS:
        for _ in range(TIMING_RUNS):
            timer = StageTimer()
            with timer(v):
                forward(v, x, weights)
            best[v] = min(best.get(v, float("inf")), timer.ms[v])
    return best


def _grouping(variant: str, g: int, shuffle: bool) -> str:
    if g == 1:
        return ", 1 group"
    between = "then" if variant == "group" else "between them"
    return f", {g} groups, {'a' if shuffle else 'no'} channel shuffle {between}"


def _shuffle_text(weights: FamilyWeights, c_out: int) -> str:
    if not weights.shuffle:
        return "none (groups in order)"
    per = c_out // weights.groups
    return f"output j takes group j mod {weights.groups}, channel j // {weights.groups} ({per} per group)"
