"""Squeeze-and-excitation (Hu et al., 2018) on an interpretable feature bank: global average
pool (squeeze), a C -> C/r -> C MLP with ReLU and sigmoid (excitation), and channels rescaled by
its weights (recalibration). The weights come from a seeded random MLP, from the user (manual),
or from an MLP trained live to make a marked box hold more of the recalibrated energy.

The block itself is ``backends.functional.squeeze_excitation``; the per-image stage, the box
energies and the panels are in ``_squeeze_excitation_panels``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Optional

import numpy as np
import torch

from backends.features import FeatureBank
from backends.functional.optim import Adam
from backends.functional.squeeze_excitation import excitation, se_hidden_size, se_init
from backends.layers import CurveLayer, MetricsLayer, Result
from backends.ops._squeeze_excitation_panels import (
    Bank,
    box_in,
    channel_energies,
    manual_weights,
    region_share,
    se_layers,
)
from backends.params import ChoiceParam, FloatParam, IntParam, SeedParam
from backends.registry import Action, JobUpdate, Operator, OperatorSpec, Query, query_point, register
from backends.timing import StageTimer, elapsed_ms, now

__all__ = ["SqueezeExcitation", "box_in", "channel_energies", "manual_weights", "region_share"]

MODES = ("learned", "random", "manual")
MLP_MODES = (("mode", ("learned", "random")),)  # the modes whose weights an MLP makes
EMPHASIS = ("90° edges", "0° edges", "45° edges", "135° edges", "fine scale", "coarse scale", "colour", "light/dark",
            "texture")
LOSS, SHARE = "loss", "box share %"  # the training curve's series: the share on the right axis
RESULT_INTERVAL_MS = 100.0  # during training, a full result at most this often
MLP = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # w1 (h, C), b1, w2 (C, h), b2


@dataclass
class Training:
    """What the last training left: the MLP and its loss and share per step."""

    mlp: MLP
    steps: list[int]
    loss: list[float]
    share: list[float]
    box: tuple[float, float, float, float]


@register
class SqueezeExcitation(Operator):
    spec = OperatorSpec(
        name="squeeze_excitation",
        title="Squeeze-and-excitation",
        family="Attention & channels",
        description=(
            "Channel attention: each channel of a feature bank (Gabor orientations and scales, colour "
            "opponents, texture) is averaged to one number (squeeze), a small MLP turns those numbers into "
            "weights in (0, 1) (excitation), and each channel is multiplied by its weight. Click to place the "
            "box and press Train: the MLP learns to give the box a larger share of the recalibrated energy."
        ),
        params=(
            ChoiceParam("mode", "learned", MODES, help="learned: the MLP Train optimizes (its seeded init until trained); "
                        "random: a fresh seeded MLP; manual: weights from emphasis and strength."),
            IntParam("reduction", 4, 1, 24, help="Reduction ratio r: the MLP's hidden layer has C / r units.",
                     enabled_when=MLP_MODES),
            SeedParam("seed", 0, help="Seed of the random MLP and of the learned MLP's starting point.",
                      enabled_when=MLP_MODES),
            FloatParam("init_gain", 3.0, 0.1, 10.0, step=0.1, help="Scale of the random init (1 is nn.Linear's).",
                       enabled_when=MLP_MODES),
            ChoiceParam("emphasis", "90° edges", EMPHASIS, help="Manual mode: the channel group to keep.",
                        enabled_when=(("mode", ("manual",)),)),
            FloatParam("strength", 0.8, 0.0, 1.0, help="Manual mode: 0 gives every weight 0.5, 1 nearly 1 and 0.",
                       enabled_when=(("mode", ("manual",)),)),
            IntParam("region", 96, 8, 1024, help="Side of the marked box around the query, input pixels."),
            IntParam("steps", 300, 10, 5000, step=10, help="Training steps (Adam).", enabled_when=(("mode", ("learned",)),)),
            FloatParam("lr", 0.05, 0.001, 1.0, step=0.005, help="Training learning rate.", enabled_when=(("mode", ("learned",)),)),
        ),
        primary="Recalibrated features",
        actions=(Action("train", "Train", "Train the learned MLP so the box holds more of the recalibrated energy."),),
    )
    memo_capacity = 4  # the per-image bank

    def __init__(self) -> None:
        super().__init__()
        self._training: Optional[Training] = None

    def reset_state(self) -> None:
        super().reset_state()
        self._training = None

    # -- stages --------------------------------------------------------------------------------
    def _bank(self, image: torch.Tensor, params: Mapping[str, Any]) -> Bank:
        """Everything that depends on the image only, cached until the image changes."""
        return self.memo.stage("bank", params, (), lambda: Bank.of(image))

    def _weights(self, params: Mapping[str, Any], bank: FeatureBank, z: torch.Tensor) -> tuple[torch.Tensor, str]:
        """The (C,) weights for the chosen mode and a caption saying where they came from."""
        c = bank.channels
        if params["mode"] == "manual":
            w = manual_weights(c, bank.groups[params["emphasis"]], float(params["strength"])).to(z.device)
            return w, f"manual: {params['emphasis']} up, the rest down, strength {params['strength']:.2f}"
        mlp, how = self._mlp(params, c, z.device)
        return excitation(z, *mlp)[0], how

    def _mlp(self, params: Mapping[str, Any], channels: int, device: Any) -> tuple[MLP, str]:
        r = int(params["reduction"])
        h = se_hidden_size(channels, r)
        trained = self._training
        if params["mode"] == "learned" and trained is not None and trained.mlp[0].shape[0] == h:
            return trained.mlp, f"trained MLP ({len(trained.steps)} steps), C={channels} -> {h} -> {channels}"
        mlp = se_init(channels, r, params["seed"], params["init_gain"], device)
        if params["mode"] == "learned":
            note = "untrained (seeded init): press Train" if trained is None else "trained for another r: seeded init"
            return mlp, f"{note}, C={channels} -> {h} -> {channels}"
        return mlp, f"random MLP seed {params['seed']}, gain {params['init_gain']:g}, C={channels} -> {h} -> {channels}"

    # -- run -----------------------------------------------------------------------------------
    def run(self, image: torch.Tensor, params: Mapping[str, Any], query: Query) -> Result:
        timer = StageTimer()
        with timer("feature bank"):  # cached per image
            stage = self._bank(image, params)
        with timer("excitation"):
            weights, how = self._weights(params, stage.bank, stage.z)
        layers = self._layers(image, params, query, stage, weights, how)
        metrics = layers[-1]
        return Result(layers[:-1] + (MetricsLayer(metrics.name, {
            **metrics.values, **timer.metrics(3), "run ms": round(timer.total_ms, 2)}),))

    def _layers(self, image: torch.Tensor, params: Mapping[str, Any], query: Query, stage: Bank,
                weights: torch.Tensor, how: str) -> tuple:
        _, _, H, W = image.shape
        layers = se_layers(stage, weights, how, query_point(query, W, H), int(params["region"]),
                           int(params["reduction"]), (W, H))
        return layers[:-1] + (self._curve_layer(), layers[-1])  # the curve goes before the metrics

    def _curve_layer(self) -> CurveLayer:
        t = self._training
        if t is None:
            series = {LOSS: (np.zeros(0), np.zeros(0)), SHARE: (np.zeros(0), np.zeros(0))}
            caption = "press Train: Adam on -log(box share), the MLP's only input is this image's squeeze"
        else:
            x = np.asarray(t.steps, np.float32)
            series = {LOSS: (x, np.asarray(t.loss, np.float32)), SHARE: (x, 100 * np.asarray(t.share, np.float32))}
            x0, y0, w, h = t.box
            caption = (f"loss -log(share) {t.loss[0]:.3f} -> {t.loss[-1]:.3f}; share {t.share[0]:.1%} -> "
                       f"{t.share[-1]:.1%} for the {w:.0f}x{h:.0f} box at ({x0:.0f}, {y0:.0f})")
        return CurveLayer("Training", series, x_label="step", y_label="loss -log(box share)", right=(SHARE,),
                          right_label="box share %", caption=caption)

    # -- training ------------------------------------------------------------------------------
    def job_train(self, image: torch.Tensor, params: Mapping[str, Any], query: Query) -> Iterator[JobUpdate]:
        """Adam on -log(box share) for the learned MLP, from its seeded init (or the last training)."""
        params = dict(params, mode="learned")
        stage = self._bank(image, params)
        bank, z = stage.bank, stage.z
        _, _, H, W = image.shape
        q = query_point(query, W, H)
        h, w = bank.maps.shape[-2:]
        inside, total = channel_energies(bank.maps, box_in(q, int(params["region"]), w, h, bank.scale))
        start_mlp, _ = self._mlp(params, bank.channels, z.device)
        leaves = [t.detach().clone().requires_grad_(True) for t in start_mlp]
        optimizer = Adam(leaves, lr=float(params["lr"]))
        x0, y0, x1, y1 = box_in(q, int(params["region"]), W, H)
        training = Training(tuple(t.detach() for t in leaves), [], [], [], (x0, y0, x1 - x0, y1 - y0))
        self._training = training
        steps = int(params["steps"])
        last = None
        for step in range(1, steps + 1):
            loss, share = train_step(leaves, optimizer, z, inside, total)
            training.mlp = tuple(t.detach().clone() for t in leaves)
            training.steps.append(step)
            training.loss.append(loss)
            training.share.append(share)
            result = None
            if last is None or elapsed_ms(last) >= RESULT_INTERVAL_MS or step == steps:
                last = now()
                weights, how = self._weights(params, bank, z)
                result = Result(self._layers(image, params, query, stage, weights, how))
            yield JobUpdate(step / steps, f"step {step}/{steps}: box share {share:.1%}", result)


def train_step(leaves: list[torch.Tensor], optimizer: Adam, z: torch.Tensor,
               inside: torch.Tensor, total: torch.Tensor) -> tuple[float, float]:
    """One Adam step on -log(box share) for the MLP ``leaves`` (w1, b1, w2, b2); returns the loss
    and share before the step. Grad mode is switched on here, per step, so the step works
    whatever mode its caller runs in, and a generator leaves no mode changed between its yields."""
    with torch.enable_grad():
        optimizer.zero_grad()
        share = region_share(excitation(z, *leaves)[0], inside, total)
        loss = -torch.log(share.clamp_min(1e-12))
        loss.backward()
    optimizer.step()
    return float(loss.detach()), float(share.detach())
