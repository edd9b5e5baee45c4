"""Squeeze-and-excitation (Hu et al., 2018) on an interpretable feature bank: global average
pool (squeeze), a C -> C/r -> C MLP with ReLU and sigmoid (excitation), and channels rescaled by
its weights (recalibration). The weights come from a seeded random MLP, from the user (manual),
or from an MLP trained live to make a marked box hold more of the recalibrated energy."""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterator, Mapping, Optional

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from backends.features import FeatureBank, feature_bank, robust_max
from backends.layers import BarsLayer, CurveLayer, FeatureMapsLayer, MetricsLayer, PointSet, PointsLayer, Result
from backends.memo import Memo
from backends.params import ChoiceParam, FloatParam, IntParam, SeedParam
from backends.registry import Action, JobUpdate, Operator, OperatorSpec, Query, register

MODES = ("learned", "random", "manual")
EMPHASIS = ("90° edges", "0° edges", "45° edges", "135° edges", "fine scale", "coarse scale", "colour", "light/dark",
            "texture")
MANUAL_LOGIT = 5.0  # strength 1 gives weights sigmoid(+-5) = 0.993 / 0.007
DISPLAY_SIDE = 128  # mosaic tiles are at most this size, to keep the UI thread's tiling cheap
RESULT_INTERVAL_S = 0.1  # during training, a full result at most this often


def hidden_size(channels: int, reduction: int) -> int:
    """C // r, at least 1 (the paper's bottleneck width)."""
    return max(1, channels // reduction)


def se_parameter_count(channels: int, reduction: int) -> int:
    """Weights and biases of the excitation MLP: C*h + h + h*C + C = 2*C*C/r + C/r + C."""
    h = hidden_size(channels, reduction)
    return 2 * channels * h + h + channels


@dataclass
class ExcitationMLP:
    """fc1 (h, C) + (h,), fc2 (C, h) + (C,): the layout of ``nn.Linear`` (and of torchvision's
    1x1-conv ``SqueezeExcitation`` with its kernel dimensions dropped)."""

    w1: torch.Tensor
    b1: torch.Tensor
    w2: torch.Tensor
    b2: torch.Tensor

    def tensors(self) -> list[torch.Tensor]:
        return [self.w1, self.b1, self.w2, self.b2]

    @property
    def hidden(self) -> int:
        return int(self.w1.shape[0])


def init_mlp(channels: int, reduction: int, seed: int, gain: float = 1.0, device: Any = "cpu") -> ExcitationMLP:
    """``nn.Linear``'s default init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), times ``gain``, seeded.
    A gain above 1 spreads the untrained weights away from 0.5 so the channels differ visibly."""
    h = hidden_size(channels, reduction)
    gen = torch.Generator().manual_seed(int(seed))

    def uniform(shape: tuple[int, ...], fan_in: int) -> torch.Tensor:
        bound = gain / fan_in**0.5
        return ((torch.rand(shape, generator=gen) * 2 - 1) * bound).to(device)

    return ExcitationMLP(uniform((h, channels), channels), uniform((h,), channels),
                         uniform((channels, h), h), uniform((channels,), h))


def excitation(z: torch.Tensor, mlp: ExcitationMLP) -> torch.Tensor:
    """Channel weights (N, C) in (0, 1) from the squeeze (N, C): sigmoid(fc2(relu(fc1(z))))."""
    return torch.sigmoid(F.linear(F.relu(F.linear(z, mlp.w1, mlp.b1)), mlp.w2, mlp.b2))


def squeeze_excitation(x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor,
                       b2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The SE block on (N, C, H, W): returns the recalibrated maps (N, C, H, W) and the weights
    (N, C). Same arithmetic as torchvision.ops.SqueezeExcitation with ReLU and sigmoid."""
    if x.ndim != 4 or w1.shape[1] != x.shape[1] or w2.shape[0] != x.shape[1]:
        raise ValueError(f"expected x (N, C, H, W) with fc1 (h, C) and fc2 (C, h); got x {tuple(x.shape)}, "
                         f"fc1 {tuple(w1.shape)}, fc2 {tuple(w2.shape)}")
    s = excitation(x.mean((2, 3)), ExcitationMLP(w1, b1, w2, b2))
    return x * s[:, :, None, None], s


def manual_weights(channels: int, emphasised: tuple[int, ...], strength: float) -> torch.Tensor:
    """(C,) weights sigmoid(+-5 * strength): up for the emphasised channels, down for the rest."""
    logits = torch.full((channels,), -MANUAL_LOGIT * strength)
    logits[list(emphasised)] = MANUAL_LOGIT * strength
    return torch.sigmoid(logits)


def box_in(query: tuple[int, int], side: int, width: int, height: int, scale: float = 1.0) -> tuple[int, int, int, int]:
    """The side x side box centred on ``query`` (input px), clipped to the image, in a frame
    ``scale`` times the input: (x0, y0, x1, y1), never empty."""
    half = side / 2.0
    qx, qy = (query[0] + 0.5) * scale, (query[1] + 0.5) * scale
    x0 = int(np.clip(np.floor(qx - half * scale), 0, width - 1))
    y0 = int(np.clip(np.floor(qy - half * scale), 0, height - 1))
    x1 = int(np.clip(np.ceil(qx + half * scale), x0 + 1, width))
    y1 = int(np.clip(np.ceil(qy + half * scale), y0 + 1, height))
    return x0, y0, x1, y1


def channel_energies(maps: torch.Tensor, box: tuple[int, int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per channel of ``maps`` (1, C, h, w), the squared response summed inside ``box`` and over
    the whole map: (C,), (C,). With E = sum_c (s_c F_c)^2 the box's share of the recalibrated
    energy is (s^2 . inside) / (s^2 . total), so training never has to touch the maps again."""
    sq = maps[0] ** 2
    x0, y0, x1, y1 = box
    return sq[:, y0:y1, x0:x1].sum((1, 2)), sq.sum((1, 2))


def region_share(weights: torch.Tensor, inside: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    w2 = weights * weights
    return (w2 * inside).sum(-1) / (w2 * total).sum(-1).clamp_min(1e-12)


@dataclass(frozen=True)
class Bank:
    """Per-image stage: the bank, its squeeze ``z`` (1, C), mosaic-sized maps ``small``
    (C, h', w') with their colour ceiling ``hi``, and the image at 30% as (H, W, 3) uint8 under the overlay."""

    bank: FeatureBank
    z: torch.Tensor
    squared: torch.Tensor  # (C, h * w): F_c^2, so an energy map is one matrix-vector product
    small: torch.Tensor
    hi: float
    dimmed: np.ndarray

    @staticmethod
    def of(image: torch.Tensor) -> Bank:
        bank = feature_bank(image)
        h, w = bank.maps.shape[-2:]
        f = min(1.0, DISPLAY_SIDE / max(h, w))
        size = (max(1, round(h * f)), max(1, round(w * f)))
        small = (F.interpolate(bank.maps, size=size, mode="area") if f < 1 else bank.maps)[0]
        dimmed = (image[0].permute(1, 2, 0) * (0.3 * 255)).round().to(torch.uint8).cpu().numpy()
        squared = (bank.maps[0] ** 2).reshape(bank.channels, -1)
        return Bank(bank, bank.maps.mean((2, 3)), squared, small, float(robust_max(small)), np.ascontiguousarray(dimmed))


@dataclass
class Training:
    """What the last training left: the MLP and its loss and share per step."""

    mlp: ExcitationMLP
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
            IntParam("reduction", 4, 1, 24, help="Reduction ratio r: the MLP's hidden layer has C / r units."),
            SeedParam("seed", 0, help="Seed of the random MLP and of the learned MLP's starting point."),
            FloatParam("init_gain", 3.0, 0.1, 10.0, step=0.1, help="Scale of the random init (1 is nn.Linear's)."),
            ChoiceParam("emphasis", "90° edges", EMPHASIS, help="Manual mode: the channel group to keep."),
            FloatParam("strength", 0.8, 0.0, 1.0, help="Manual mode: 0 gives every weight 0.5, 1 nearly 1 and 0."),
            IntParam("region", 96, 8, 1024, help="Side of the marked box around the query, input pixels."),
            IntParam("steps", 300, 10, 5000, step=10, help="Training steps (Adam)."),
            FloatParam("lr", 0.05, 0.001, 1.0, step=0.005, help="Training learning rate."),
        ),
        actions=(Action("train", "Train", "Train the learned MLP so the box holds more of the recalibrated energy."),),
    )

    def __init__(self) -> None:
        self._memo = Memo(capacity=4)
        self._training: Optional[Training] = None

    def reset_state(self) -> None:
        self._memo.clear()
        self._training = None

    # -- stages --------------------------------------------------------------------------------
    def _bank(self, image: torch.Tensor) -> Bank:
        """Everything that depends on the image only, cached until the image changes."""
        self._memo.bind(image)
        return self._memo.get("bank", lambda: Bank.of(image))

    def _weights(self, params: Mapping[str, Any], bank: FeatureBank, z: torch.Tensor) -> tuple[torch.Tensor, str]:
        """The (C,) weights for the chosen mode and a caption saying where they came from."""
        c = bank.channels
        if params["mode"] == "manual":
            w = manual_weights(c, bank.groups[params["emphasis"]], float(params["strength"])).to(z.device)
            return w, f"manual: {params['emphasis']} up, the rest down, strength {params['strength']:.2f}"
        mlp, how = self._mlp(params, c, z.device)
        return excitation(z, mlp)[0], how

    def _mlp(self, params: Mapping[str, Any], channels: int, device: Any) -> tuple[ExcitationMLP, str]:
        r = int(params["reduction"])
        h = hidden_size(channels, r)
        trained = self._training
        if params["mode"] == "learned" and trained is not None and trained.mlp.hidden == h:
            return trained.mlp, f"trained MLP ({len(trained.steps)} steps), C={channels} -> {h} -> {channels}"
        mlp = init_mlp(channels, r, params["seed"], params["init_gain"], device)
        if params["mode"] == "learned":
            note = "untrained (seeded init): press Train" if trained is None else "trained for another r: seeded init"
            return mlp, f"{note}, C={channels} -> {h} -> {channels}"
        return mlp, f"random MLP seed {params['seed']}, gain {params['init_gain']:g}, C={channels} -> {h} -> {channels}"

    # -- run -----------------------------------------------------------------------------------
    def run(self, image: torch.Tensor, params: Mapping[str, Any], query: Query) -> Result:
        t0 = time.perf_counter()
        stage = self._bank(image)
        t_bank = time.perf_counter()
        weights, how = self._weights(params, stage.bank, stage.z)
        t_mlp = time.perf_counter()
        result = self._result(image, params, query, stage, weights, how)
        timings = {"feature bank ms (cached per image)": round((t_bank - t0) * 1e3, 2),
                   "excitation ms": round((t_mlp - t_bank) * 1e3, 3),
                   "run ms": round((time.perf_counter() - t0) * 1e3, 2)}
        metrics = result.layers[-1]
        return Result(result.layers[:-1] + (MetricsLayer(metrics.name, {**metrics.values, **timings}),))

    def _result(self, image: torch.Tensor, params: Mapping[str, Any], query: Query, stage: Bank,
                weights: torch.Tensor, how: str) -> Result:
        bank, z, small, hi = stage.bank, stage.z, stage.small, stage.hi
        _, _, H, W = image.shape
        q = _clamp_query(query, W, H)
        c, r = bank.channels, int(params["reduction"])
        side = int(params["region"])
        h, w = bank.maps.shape[-2:]
        inside, total = channel_energies(bank.maps, box_in(q, side, w, h, bank.scale))
        share_before = float(region_share(torch.ones_like(weights), inside, total))
        share_after = float(region_share(weights, inside, total))
        x0, y0, x1, y1 = box_in(q, side, W, H)
        box = (float(x0), float(y0), float(x1 - x0), float(y1 - y0))
        recal = small * weights[:, None, None]
        energy = (weights * weights @ stage.squared).view(h, w)  # sum_c (s_c F_c)^2
        layers = (
            FeatureMapsLayer("Features", small, labels=bank.short_labels, levels=(0.0, hi), colormap="inferno",
                             caption=f"{c} channels at {w}x{h} (the bank runs at reduced resolution; mosaic at "
                                     f"{small.shape[-1]}x{small.shape[-2]})"),
            FeatureMapsLayer("Recalibrated features", recal, levels=(0.0, hi), colormap="inferno",
                             caption="each channel times its excitation weight, in the layout and colour scale of "
                                     "Features"),
            BarsLayer("Squeeze and excitation", bank.glyphs, {"squeeze z (channel mean)": z[0], "weight": weights},
                      y_range=(0.0, 1.0),
                      caption=f"{how}. —/|\\ + octave: Gabor stripes at 0/45/90/135°; R G B Y: colour opponents; "
                              "L D: light, dark; T1 T2: texture fine, coarse"),
            PointsLayer(
                "Recalibrated energy",
                sets=(PointSet(np.array([q], np.float32), color=(60, 220, 255), size=11.0, label="query"),),
                background=_energy_overlay(stage.dimmed, energy),
                boxes=(box,),
                caption=f"sum over channels of (weight x feature)^2; box share {share_before:.1%} before, "
                        f"{share_after:.1%} after recalibration",
            ),
            self._curve_layer(),
            MetricsLayer("Metrics", {
                "channels C": c,
                "reduction r": r,
                "hidden C/r": hidden_size(c, r),
                "MLP parameters (2C²/r + C/r + C)": se_parameter_count(c, r),
                "MLP multiply-adds": 2 * c * hidden_size(c, r),
                "rescale multiplies": c * h * w,
                "box share before": f"{share_before:.2%}",
                "box share after": f"{share_after:.2%}",
                "mean weight": round(float(weights.mean()), 4),
            }),
        )
        return Result(layers)

    def _curve_layer(self) -> CurveLayer:
        t = self._training
        if t is None:
            series = {"loss": (np.zeros(0), np.zeros(0)), "box share %": (np.zeros(0), np.zeros(0))}
            caption = "press Train: Adam on -log(box share), the MLP's only input is this image's squeeze"
        else:
            x = np.asarray(t.steps, np.float32)
            series = {"loss": (x, np.asarray(t.loss, np.float32)),
                      "box share %": (x, 100 * np.asarray(t.share, np.float32))}
            x0, y0, w, h = t.box
            caption = (f"loss -log(share) {t.loss[0]:.3f} -> {t.loss[-1]:.3f}; share {t.share[0]:.1%} -> "
                       f"{t.share[-1]:.1%} for the {w:.0f}x{h:.0f} box at ({x0:.0f}, {y0:.0f})")
        return CurveLayer("Training", series, x_label="step", y_label="loss, box share %", caption=caption)

    # -- training ------------------------------------------------------------------------------
    def start(self, action: str, image: torch.Tensor, params: Mapping[str, Any], query: Query) -> Iterator[JobUpdate]:
        if action != "train":
            raise ValueError(f"{self.spec.name} has no action {action!r}")
        return self._train(image, dict(params, mode="learned"), query)

    def _train(self, image: torch.Tensor, params: dict[str, Any], query: Query) -> Iterator[JobUpdate]:
        stage = self._bank(image)
        bank, z = stage.bank, stage.z
        _, _, H, W = image.shape
        q = _clamp_query(query, W, H)
        h, w = bank.maps.shape[-2:]
        inside, total = channel_energies(bank.maps, box_in(q, int(params["region"]), w, h, bank.scale))
        start_mlp, _ = self._mlp(params, bank.channels, z.device)
        leaves = [t.detach().clone().requires_grad_(True) for t in start_mlp.tensors()]
        optimizer = Adam(leaves, lr=float(params["lr"]))
        x0, y0, x1, y1 = box_in(q, int(params["region"]), W, H)
        training = Training(ExcitationMLP(*[t.detach() for t in leaves]), [], [], [], (x0, y0, x1 - x0, y1 - y0))
        self._training = training
        steps = int(params["steps"])
        last = 0.0
        for step in range(1, steps + 1):
            loss, share = train_step(leaves, optimizer, z, inside, total)
            training.mlp = ExcitationMLP(*[t.detach().clone() for t in leaves])
            training.steps.append(step)
            training.loss.append(loss)
            training.share.append(share)
            now = time.perf_counter()
            result = None
            if now - last >= RESULT_INTERVAL_S or step == steps:
                last = now
                weights, how = self._weights(params, bank, z)
                result = self._result(image, params, query, stage, weights, how)
            yield JobUpdate(step / steps, f"step {step}/{steps}: box share {share:.1%}", result)


class Adam:
    """Adam (Kingma & Ba) with the paper's defaults, written out: constructing torch.optim.Adam
    imports torch._dynamo, which froze the first Train press for 1.5-3.5 s on this CPU."""

    def __init__(self, leaves: list[torch.Tensor], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        self.leaves, self.lr, self.betas, self.eps = leaves, lr, betas, eps
        self.m = [torch.zeros_like(t) for t in leaves]
        self.v = [torch.zeros_like(t) for t in leaves]
        self.t = 0

    def zero_grad(self) -> None:
        for t in self.leaves:
            t.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        b1, b2 = self.betas
        for p, m, v in zip(self.leaves, self.m, self.v):
            if p.grad is None:
                continue
            m.mul_(b1).add_(p.grad, alpha=1 - b1)
            v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
            denom = (v / (1 - b2**self.t)).sqrt_().add_(self.eps)
            p.addcdiv_(m, denom, value=-self.lr / (1 - b1**self.t))


def train_step(leaves: list[torch.Tensor], optimizer: Adam, z: torch.Tensor,
               inside: torch.Tensor, total: torch.Tensor) -> tuple[float, float]:
    """One Adam step on -log(box share) for the MLP ``leaves`` (w1, b1, w2, b2); returns the loss
    and share before the step. Grad mode is switched on here, per step, because the worker thread
    runs with it off and a generator must not leave it on between its yields."""
    with torch.enable_grad():
        optimizer.zero_grad()
        share = region_share(excitation(z, ExcitationMLP(*leaves))[0], inside, total)
        loss = -torch.log(share.clamp_min(1e-12))
        loss.backward()
    optimizer.step()
    return float(loss.detach()), float(share.detach())


def _clamp_query(query: Query, width: int, height: int) -> tuple[int, int]:
    qx, qy = query if query is not None else (width // 2, height // 2)
    return int(np.clip(qx, 0, width - 1)), int(np.clip(qy, 0, height - 1))


def _energy_overlay(dimmed: np.ndarray, energy: torch.Tensor) -> np.ndarray:
    """The dimmed image (H, W, 3) uint8 plus ``energy`` (h, w) through a 70% inferno, as floats
    in [0, 1], so the box can be drawn on top (a PointsLayer has boxes; a HeatmapLayer has none).
    Blended in uint8 with cv2's table lookup: a third of the cost of float colour mapping."""
    H, W = dimmed.shape[:2]
    e = (energy / robust_max(energy, samples=4096)).clamp(0, 1).mul(255).to(torch.uint8).cpu().numpy()
    e = cv2.resize(e, (W, H), interpolation=cv2.INTER_LINEAR)
    heat = cv2.LUT(cv2.merge([e, e, e]), _inferno_table())
    return cv2.add(dimmed, heat).astype(np.float32) * np.float32(1 / 255)


@lru_cache(maxsize=1)
def _inferno_table() -> np.ndarray:
    """(1, 256, 3) uint8 inferno colours (RGB) times 0.7, the overlay's opacity."""
    ramp = np.arange(256, dtype=np.uint8)[:, None]
    rgb = cv2.applyColorMap(ramp, cv2.COLORMAP_INFERNO)[:, 0, ::-1]
    return np.ascontiguousarray((0.7 * rgb).round().astype(np.uint8)[None])
