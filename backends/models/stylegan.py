"""A StyleGAN2-like generator and discriminator at 32x32, small enough to train on a CPU.

Generator: z (64) -> mapping network (4 equalized-lr layers) -> w (64), broadcast to ``NUM_WS``
per-layer styles. Synthesis starts from a learned constant 4x4, doubles to 32x32 with modulated /
demodulated 3x3 convolutions, adds per-pixel noise scaled by a learned strength per layer, and sums
toRGB outputs of every resolution (skip architecture).

Style index per layer (``LAYER_NAMES``): 0 b4.conv, 1 b8.conv0, 2 b8.conv1, 3 b16.conv0, 4 b16.conv1,
5 b32.conv0, 6 b32.conv1, 7 b32.torgb. The toRGB of a block reads the style of the next block's
first conv (as in StyleGAN2), the last toRGB has its own. Coarse = 0-2 (4x4, 8x8), middle = 3-4
(16x16), fine = 5-7 (32x32).

Conditioning (as StyleGAN2-ADA conditions its mapping network): a vector ``c`` (``C_DIM``) of the
true face attributes (mouth curve, tilt / 30 degrees, glasses 0/1, hair one-hot none/short/long) is
embedded by an equalized linear layer, normalized, and concatenated with the normalized z before
the mapping MLP, so w carries the attributes; everything after w is unchanged. Unless given, ``c``
is a deterministic function of z (``attributes_from_z``): the data's own attribute distribution
(``backends.data.faces``) sampled by inverse CDF from the first ``C_FROM_Z`` coordinates of z. A seed
therefore fixes both z and c, unconditional sampling at psi = 1 has the data's attribute marginals
when G follows c, and truncation still pulls towards the one tracked ``w_avg``.

Discriminator: residual blocks 32 -> 4 (stride-2 convs), minibatch standard deviation, then two linear
layers; with conditioning a projection term (Miyato and Koyama 2018), ``<embed(c), features>``, is
added to the logit (with PacGAN packing, the packed samples' c vectors are concatenated).
Every weight uses the equalized learning rate (weights stored as N(0, 1) and scaled at run time by
``1 / sqrt(fan_in)``), which keeps the effective step of Adam the same for every layer.
Images are (N, 3, 32, 32) in [-1, 1] at this level; ``to_unit`` maps them to [0, 1].
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from backends.models.cache import cached_model
from backends.models.weights import load_weights

WEIGHTS_PATH = Path(__file__).resolve().parents[2] / "assets" / "weights" / "stylegan_faces.safetensors"
Z_DIM = 64
W_DIM = 64
NUM_WS = 8
LAYER_NAMES = ("4 conv", "8 conv0", "8 conv1", "16 conv0", "16 conv1", "32 conv0", "32 conv1", "32 toRGB")
LAYER_GROUPS = {"coarse": (0, 1, 2), "middle": (3, 4), "fine": (5, 6, 7)}
NOISE_LAYERS = 7  # every conv layer (not toRGB) has a noise input
G_CHANNELS = {4: 96, 8: 80, 16: 48, 32: 32}
D_CHANNELS = {32: 32, 16: 64, 8: 128, 4: 128}
SQRT2 = math.sqrt(2.0)
C_DIM = 6  # smile (mouth curve), tilt / 30 deg, glasses, hair none / short / long
C_NAMES = ("smile", "tilt/30", "glasses", "hair none", "hair short", "hair long")
C_FROM_Z = 4  # z coordinates that fix c: smile, tilt, glasses, hair style
TILT_UNIT_DEG = 30.0


def attributes_to_c(attrs: dict) -> torch.Tensor:
    """True face attributes (``backends.data.faces``) -> (N, C_DIM) float32 conditioning vectors."""
    smile = torch.as_tensor(np.asarray(attrs["smile"], np.float32))
    tilt = torch.as_tensor(np.asarray(attrs["tilt"], np.float32)) / TILT_UNIT_DEG
    glasses = torch.as_tensor(np.asarray(attrs["glasses"], np.float32))
    hair = F.one_hot(torch.as_tensor(np.asarray(attrs["hair_style"], np.int64)), 3).float()
    return torch.cat([smile[:, None], tilt[:, None], glasses[:, None], hair], 1)


def attributes_from_z(z: torch.Tensor) -> torch.Tensor:
    """(N, Z_DIM) -> (N, C_DIM): the faces' attribute distribution sampled by inverse CDF from
    z[:, :C_FROM_Z] (each standard normal, so Phi(z_i) is uniform): mouth curve and tilt uniform
    over their ranges, glasses with probability GLASSES_P, hair style with HAIR_STYLE_P. Continuous
    in z for smile and tilt, so z interpolations stay smooth there."""
    from backends.data.faces import GLASSES_P, HAIR_STYLE_P, SMILE_RANGE, TILT_RANGE

    u = 0.5 * (1.0 + torch.erf(z[:, :C_FROM_Z].float() / SQRT2))
    smile = SMILE_RANGE[0] + (SMILE_RANGE[1] - SMILE_RANGE[0]) * u[:, 0]
    tilt = (TILT_RANGE[0] + (TILT_RANGE[1] - TILT_RANGE[0]) * u[:, 1]) / TILT_UNIT_DEG
    glasses = (u[:, 2] < GLASSES_P).float()
    edges = torch.tensor(np.cumsum(HAIR_STYLE_P)[:-1], dtype=u.dtype, device=u.device)
    hair = F.one_hot(torch.bucketize(u[:, 3].contiguous(), edges, right=True), 3).float()
    return torch.cat([smile[:, None], tilt[:, None], glasses[:, None], hair], 1).to(z.dtype)


def _normalize(x: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(1, keepdim=True) + 1e-8)


def lrelu(x: torch.Tensor) -> torch.Tensor:
    """Leaky ReLU with the gain that keeps unit variance, as in StyleGAN."""
    return F.leaky_relu(x, 0.2) * SQRT2


class EqLinear(nn.Module):
    """Linear layer with equalized learning rate; ``lr_mul`` slows it (mapping network)."""

    def __init__(self, cin: int, cout: int, bias_init: float = 0.0, lr_mul: float = 1.0, act: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin) / lr_mul)
        self.bias = nn.Parameter(torch.full((cout,), float(bias_init) / lr_mul))
        self.scale = lr_mul / math.sqrt(cin)
        self.lr_mul = lr_mul
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)
        return lrelu(x) if self.act else x


class EqConv2d(nn.Module):
    """Plain convolution with equalized learning rate ('same' padding, optional stride 2), for the
    discriminator."""

    def __init__(self, cin: int, cout: int, k: int, bias: bool = True, act: bool = True, stride: int = 1) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, k, k))
        self.bias = nn.Parameter(torch.zeros(cout)) if bias else None
        self.scale = 1.0 / math.sqrt(cin * k * k)
        self.act = act
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(x, self.weight * self.scale, self.bias, stride=self.stride, padding=self.weight.shape[-1] // 2)
        return lrelu(x) if self.act else x


class MappingNetwork(nn.Module):
    """z (N, Z_DIM) [and c (N, C_DIM)] -> w (N, W_DIM); keeps ``w_avg``, the running mean of w, for
    truncation. With ``c_dim`` > 0 the input is [normalize(z), normalize(embed(c))]; a missing c is
    ``attributes_from_z(z)``."""

    def __init__(self, layers: int = 4, lr_mul: float = 0.1, w_avg_beta: float = 0.995, c_dim: int = 0) -> None:
        super().__init__()
        self.c_dim = c_dim
        if c_dim:
            self.embed = EqLinear(c_dim, W_DIM)
        dims = [Z_DIM + (W_DIM if c_dim else 0)] + [W_DIM] * layers
        self.net = nn.Sequential(*[EqLinear(a, b, lr_mul=lr_mul, act=True) for a, b in zip(dims[:-1], dims[1:])])
        self.register_buffer("w_avg", torch.zeros(W_DIM))
        self.w_avg_beta = w_avg_beta

    def forward(self, z: torch.Tensor, update_avg: bool = False, c: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = _normalize(z)  # pixel norm
        if self.c_dim:
            if c is None:
                c = attributes_from_z(z)
            x = torch.cat([x, _normalize(self.embed(c.to(z.dtype)))], 1)
        w = self.net(x)
        if update_avg:
            with torch.no_grad():
                self.w_avg.lerp_(w.detach().float().mean(0), 1.0 - self.w_avg_beta)
        return w


_BLUR = torch.tensor([1.0, 2.0, 1.0]) / 4.0
BLUR_GAIN = 2.2  # measured: the blur after a transposed conv leaves ~0.45 of the std of a plain conv


def blur(x: torch.Tensor) -> torch.Tensor:
    """Depthwise [1, 2, 1] x [1, 2, 1] / 16 low-pass, 'same' size (smooths transposed-conv output)."""
    c = x.shape[1]
    k = (_BLUR[:, None] * _BLUR[None, :]).to(x)[None, None].expand(c, 1, 3, 3)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k, groups=c)


class ModulatedConv(nn.Module):
    """Modulated (and optionally demodulated) k x k convolution; ``up`` doubles the size with a
    stride-2 transposed convolution followed by a blur, as StyleGAN2 does.

    Styles scale the input channels, the shared weight convolves, and demodulation rescales each
    output channel so its expected variance is one. Computed without grouped convolution (scale
    activations instead of weights), which is the faster path on a CPU and gives the same result.
    Weight layout (cout, cin, k, k) in both cases.
    """

    def __init__(self, cin: int, cout: int, k: int, demod: bool = True, up: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, k, k))
        self.affine = EqLinear(W_DIM, cin, bias_init=1.0)
        self.scale = 1.0 / math.sqrt(cin * k * k)
        self.demod, self.up, self.k = demod, up, k

    _baked: Optional[tuple[torch.Tensor, torch.Tensor]] = None

    def _apply(self, fn, recurse: bool = True):
        """Baked weights follow the module's moves (``.to(device)``): they are baked again."""
        super()._apply(fn, recurse)
        if self._baked is not None:
            self.bake()
        return self

    def bake(self, on: bool = True) -> None:
        """Precompute the scaled (and transposed) weight and its squared sums for inference; the
        weights must not change while baked."""
        self._baked = None
        if on:
            with torch.no_grad():
                weight = self.weight * self.scale
                conv_w = (weight.transpose(0, 1) * 2.0).contiguous() if self.up else weight.contiguous()
                self._baked = (conv_w, weight.pow(2).sum((2, 3)).t().contiguous())

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        s = self.affine(w)  # (N, cin)
        if self._baked is not None:
            conv_w, wsq_t = self._baked
        else:
            weight = self.weight * self.scale
            # Transposed conv at stride 2 costs what a conv at the low resolution costs. Each output
            # pixel gets taps from about a quarter of the kernel, so the gain of 2 restores variance.
            conv_w = weight.transpose(0, 1) * 2.0 if self.up else weight
            wsq_t = weight.pow(2).sum((2, 3)).t() if self.demod else None  # (cin, cout)
        x = x * s[:, :, None, None]
        if self.up:
            x = F.conv_transpose2d(x, conv_w, stride=2, padding=self.k // 2, output_padding=1)
            x = blur(x) * BLUR_GAIN
        else:
            x = F.conv2d(x, conv_w, padding=self.k // 2)
        if self.demod:
            d = torch.rsqrt(s.pow(2) @ wsq_t + 1e-8)  # (N, cout)
            x = x * d[:, :, None, None]
        return x


class SynthesisLayer(nn.Module):
    """Modulated conv, then noise times a learned per-layer strength, bias and leaky ReLU."""

    def __init__(self, cin: int, cout: int, resolution: int, up: bool = False) -> None:
        super().__init__()
        self.conv = ModulatedConv(cin, cout, 3, up=up)
        self.noise_strength = nn.Parameter(torch.zeros(()))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.resolution = resolution

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: Optional[torch.Tensor], noise_gain: float = 1.0) -> torch.Tensor:
        x = self.conv(x, w)
        if noise is not None and noise_gain != 0.0:
            x = x + noise * (self.noise_strength * noise_gain)
        return lrelu(x + self.bias[None, :, None, None])


class ToRGB(nn.Module):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.conv = ModulatedConv(cin, 3, 1, demod=False)
        self.bias = nn.Parameter(torch.zeros(3))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.conv(x, w) + self.bias[None, :, None, None]


class SynthesisNetwork(nn.Module):
    """ws (N, NUM_WS, W_DIM) -> image (N, 3, 32, 32) in about [-1, 1]."""

    def __init__(self) -> None:
        super().__init__()
        c = G_CHANNELS
        self.const = nn.Parameter(torch.randn(c[4], 4, 4))
        self.layers = nn.ModuleList([
            SynthesisLayer(c[4], c[4], 4),
            SynthesisLayer(c[4], c[8], 8, up=True), SynthesisLayer(c[8], c[8], 8),
            SynthesisLayer(c[8], c[16], 16, up=True), SynthesisLayer(c[16], c[16], 16),
            SynthesisLayer(c[16], c[32], 32, up=True), SynthesisLayer(c[32], c[32], 32),
        ])
        self.torgb = nn.ModuleList([ToRGB(c[4]), ToRGB(c[8]), ToRGB(c[16]), ToRGB(c[32])])

    def make_noise(self, n: int, mode: str = "random", generator: Optional[torch.Generator] = None,
                   device=None) -> list[Optional[torch.Tensor]]:
        """Noise inputs per conv layer: 'random', 'const' (fixed seed 0 maps) or 'none'."""
        if mode == "none":
            return [None] * NOISE_LAYERS
        if mode == "const":
            generator = torch.Generator().manual_seed(0)
            maps = [torch.randn(1, 1, L.resolution, L.resolution, generator=generator) for L in self.layers]
            return [m.to(device).expand(n, -1, -1, -1) for m in maps]
        return [torch.randn(n, 1, L.resolution, L.resolution, generator=generator).to(device) for L in self.layers]

    def forward(self, ws: torch.Tensor, noise: Optional[Sequence[Optional[torch.Tensor]]] = None,
                noise_gains: Optional[Sequence[float]] = None, return_features: bool = False):
        n = ws.shape[0]
        if noise is None:
            noise = self.make_noise(n, "random", device=ws.device)
        gains = list(noise_gains) if noise_gains is not None else [1.0] * NOISE_LAYERS
        x = self.const[None].expand(n, -1, -1, -1)
        feats = []
        x = self.layers[0](x, ws[:, 0], noise[0], gains[0])
        feats.append(x)
        img = self.torgb[0](x, ws[:, 1])
        for b in range(3):  # blocks 8, 16, 32
            i = 1 + 2 * b
            x = self.layers[i](x, ws[:, i], noise[i], gains[i])
            x = self.layers[i + 1](x, ws[:, i + 1], noise[i + 1], gains[i + 1])
            feats.append(x)
            img = F.interpolate(img, scale_factor=2, mode="bilinear", align_corners=False)
            img = img + self.torgb[b + 1](x, ws[:, i + 2])
        return (img, feats) if return_features else img


class Generator(nn.Module):
    """z -> image. ``mapping`` and ``synthesis`` are usable on their own for latent editing."""

    def __init__(self, mapping_lr_mul: float = 0.1, c_dim: int = 0) -> None:
        super().__init__()
        self.c_dim = c_dim
        self.mapping = MappingNetwork(lr_mul=mapping_lr_mul, c_dim=c_dim)
        self.synthesis = SynthesisNetwork()

    @property
    def w_avg(self) -> torch.Tensor:
        return self.mapping.w_avg

    def map(self, z: torch.Tensor, psi: float = 1.0, update_avg: bool = False,
            c: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(N, Z_DIM) -> ws (N, NUM_WS, W_DIM), truncated towards ``w_avg`` by ``psi``; ``c`` (N, C_DIM)
        overrides the attributes a conditional generator reads from z."""
        w = truncate(self.mapping(z, update_avg=update_avg, c=c), self.w_avg, psi)
        return w[:, None].expand(-1, NUM_WS, -1)

    def forward(self, z: torch.Tensor, psi: float = 1.0, noise_mode: str = "random",
                c: Optional[torch.Tensor] = None) -> torch.Tensor:
        ws = self.map(z, psi, c=c)
        return self.synthesis(ws, self.synthesis.make_noise(len(z), noise_mode, device=z.device))


class DiscriminatorBlock(nn.Module):
    """A 3x3 conv, then a stride-2 3x3 conv that halves the size, with a residual path
    (2x average pool and 1x1 conv). Striding the second conv keeps the cost a CPU can afford."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv0 = EqConv2d(cin, cin, 3)
        self.conv1 = EqConv2d(cin, cout, 3, stride=2)
        self.skip = EqConv2d(cin, cout, 1, bias=False, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.skip(F.avg_pool2d(x, 2))
        return (self.conv1(self.conv0(x)) + y) / SQRT2


def minibatch_stddev(x: torch.Tensor, group: int = 4) -> torch.Tensor:
    """Appends one channel: the std of each feature over a group of samples, averaged (StyleGAN)."""
    n, c, h, w = x.shape
    g = min(group, n)
    while n % g:
        g -= 1
    y = x.reshape(g, -1, c, h, w)
    y = (y - y.mean(0)).pow(2).mean(0).add(1e-8).sqrt()  # (n/g, c, h, w)
    y = y.mean((1, 2, 3)).reshape(-1, 1, 1, 1).repeat(g, 1, h, w)
    return torch.cat([x, y], 1)


class Discriminator(nn.Module):
    """image (N, 3, 32, 32) in [-1, 1] -> logit (N / pac,)."""

    def __init__(self, mbstd_group: int = 4, pac: int = 1, c_dim: int = 0) -> None:
        super().__init__()
        c = D_CHANNELS
        self.pac = pac
        self.c_dim = c_dim
        if c_dim:
            self.embed = EqLinear(c_dim * pac, c[4])  # projection discriminator
        self.from_rgb = EqConv2d(3 * pac, c[32], 1)
        self.blocks = nn.Sequential(
            DiscriminatorBlock(c[32], c[16]), DiscriminatorBlock(c[16], c[8]), DiscriminatorBlock(c[8], c[4])
        )
        self.conv = EqConv2d(c[4] + 1, c[4], 3)
        self.fc = EqLinear(c[4] * 16, c[4], act=True)
        self.out = EqLinear(c[4], 1)
        self.mbstd_group = mbstd_group

    def forward(self, img: torch.Tensor, c: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``img`` (N, 3, 32, 32); with ``pac`` > 1 (PacGAN) consecutive samples are judged together
        as one (N / pac, 3 pac, 32, 32) input, so a generator that repeats itself is easier to spot.
        ``c`` (N, C_DIM), packed the same way, adds the projection term <embed(c), features>.
        Returns (N / pac,) logits."""
        n, ch, h, w = img.shape
        x = self.blocks(self.from_rgb(img.reshape(n // self.pac, ch * self.pac, h, w)))
        x = self.conv(minibatch_stddev(x, self.mbstd_group))
        feat = self.fc(x.flatten(1))
        out = self.out(feat)[:, 0]
        if self.c_dim and c is not None:
            e = self.embed(c.reshape(n // self.pac, -1).to(feat.dtype))
            out = out + (e * feat).sum(1) / math.sqrt(feat.shape[1])
        return out


def truncate(ws: torch.Tensor, w_avg: torch.Tensor, psi: float) -> torch.Tensor:
    """The truncation trick: w_avg + psi (w - w_avg), any shape ending in W_DIM. psi = 1 leaves w
    as it is, 0 gives the mean for every seed, negative values reflect w through the mean."""
    return ws if psi == 1.0 else w_avg + psi * (ws - w_avg)


def mix_styles(ws: torch.Tensor, ws_b: torch.Tensor, layers: Sequence[int]) -> torch.Tensor:
    """Style mixing: ``ws`` (N, NUM_WS, W_DIM) with the styles of ``layers`` taken from ``ws_b``."""
    out = ws.clone()
    idx = list(layers)
    out[:, idx] = ws_b[:, idx]
    return out


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation from ``a`` to ``b`` (vectors) at ``t`` (T, 1): (T, D). The path the
    Gaussian z of a GAN is interpolated along (a straight line would pass through unlikely z)."""
    an, bn = a / a.norm(), b / b.norm()
    omega = torch.arccos((an * bn).sum().clamp(-1 + 1e-7, 1 - 1e-7))
    so = torch.sin(omega)
    return (torch.sin((1 - t) * omega) / so) * a + (torch.sin(t * omega) / so) * b


def to_unit(img: torch.Tensor) -> torch.Tensor:
    """[-1, 1] generator output to [0, 1] images."""
    return (img * 0.5 + 0.5).clamp(0, 1)


def z_from_seed(seeds: Sequence[int] | int, device=None) -> torch.Tensor:
    """One z per seed (as StyleGAN's tools do: a NumPy RandomState per seed), (N, Z_DIM)."""
    if isinstance(seeds, (int, np.integer)):
        seeds = [int(seeds)]
    z = np.stack([np.random.RandomState(int(s) % (2**32)).randn(Z_DIM) for s in seeds]).astype(np.float32)
    return torch.from_numpy(z).to(device)


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def load_generator(path: Optional[Path] = None, device: str = "cpu") -> Generator:
    """The EMA generator of ``path`` (the shipped one by default) in eval mode, float32, frozen,
    its convolution weights baked; one copy per file version and device (the model cache)."""
    path = Path(path or WEIGHTS_PATH)
    if not path.is_file():
        raise FileNotFoundError(f"no generator weights at {path}; run python -m backends.training.stylegan")
    return cached_model(path, read_generator, device)


def read_generator(path: Path) -> Generator:
    """A generator from its safetensors file, on the CPU, without caching (see load_generator)."""
    state = load_weights(path)
    c_dim = state["mapping.embed.weight"].shape[1] if "mapping.embed.weight" in state else 0
    g = Generator(c_dim=c_dim)
    g.load_state_dict(state)
    for p in g.parameters():
        p.requires_grad_(False)
    for m in g.modules():
        if isinstance(m, ModulatedConv):
            m.bake()
    return g.eval()


# -- latent directions (GANSpace and InterFaceGAN) ------------------------------------------------

DIRECTIONS_PATH = WEIGHTS_PATH.with_name("stylegan_faces_directions.safetensors")
ATTRIBUTE_DIRECTIONS = ("smile", "glasses", "tilt")


@torch.no_grad()
def principal_directions(G: Generator, n: int = 20000, k: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """GANSpace: PCA of mapped w's. Returns unit directions (k, W_DIM) and the std along each (k,)."""
    g = torch.Generator().manual_seed(seed)
    w = G.mapping(torch.randn(n, Z_DIM, generator=g))
    w = w - w.mean(0)
    _, s, vt = torch.linalg.svd(w, full_matrices=False)
    return vt[:k].contiguous(), s[:k] / math.sqrt(n - 1)


def fit_linear_boundary(x: torch.Tensor, y: torch.Tensor, steps: int = 300, l2: float = 1e-3) -> tuple[torch.Tensor, float]:
    """Logistic regression by L-BFGS (InterFaceGAN uses a linear SVM; the boundary is alike).
    ``x`` (N, D), ``y`` (N,) in {0, 1}. Returns the unit normal (D,) and the training accuracy."""
    # One scale for all dimensions: per-dimension standardization would favour low-variance
    # dimensions, giving a normal along which w barely moves the image.
    mu, sd = x.mean(0), x.std() + 1e-6
    xs = (x - mu) / sd
    wb = torch.zeros(x.shape[1] + 1, requires_grad=True)
    opt = torch.optim.LBFGS([wb], max_iter=steps, line_search_fn="strong_wolfe")
    yf = y.float()

    def closure():
        opt.zero_grad()
        logits = xs @ wb[:-1] + wb[-1]
        loss = F.binary_cross_entropy_with_logits(logits, yf) + l2 * wb[:-1].pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    normal = wb.detach()[:-1] / sd  # back to unstandardized w coordinates
    acc = float((((xs @ wb.detach()[:-1] + wb.detach()[-1]) > 0).float() == yf).float().mean())
    return normal / normal.norm(), acc


@torch.no_grad()
def attribute_directions(G: Generator, n: int = 3000, seed: int = 1, batch: int = 250) -> dict[str, dict]:
    """InterFaceGAN: label generated faces with the attribute classifier (smile sign, glasses, tilt
    sign), fit a linear boundary in w for each, and keep its unit normal and a slider unit (the
    typical std of w along one direction)."""
    from backends.models.attribute_classifier import predict

    g = torch.Generator().manual_seed(seed)
    ws, labels = [], {k: [] for k in ATTRIBUTE_DIRECTIONS}
    for i in range(0, n, batch):
        z = torch.randn(min(batch, n - i), Z_DIM, generator=g)
        w = G.mapping(z)
        img = to_unit(G.synthesis(w[:, None].expand(-1, NUM_WS, -1), G.synthesis.make_noise(len(z), "const")))
        pred = predict(img)
        ws.append(w)
        for k in ATTRIBUTE_DIRECTIONS:
            labels[k].append(torch.from_numpy(pred[k]))
    w = torch.cat(ws)
    out = {}
    for k in ATTRIBUTE_DIRECTIONS:
        y = torch.cat(labels[k])
        normal, acc = fit_linear_boundary(w, y)
        # Slider unit: the typical spread of w along a random direction (the same for every
        # attribute), so +-2 moves as far as the w's of two ordinary samples differ.
        step = float(w.var(0).mean().sqrt())
        out[k] = {"direction": normal, "std": step, "accuracy": acc, "positive": float(y.float().mean())}
    return out


def save_directions(G: Generator, path: Path = DIRECTIONS_PATH, n_pca: int = 20000, n_attr: int = 3000,
                    entry: Optional[dict] = None) -> dict:
    """Fits and writes GANSpace and InterFaceGAN directions for ``G``, recorded in the folder's
    manifest with ``entry``; returns the manifest entry (the summary included)."""
    from backends.models.weights import save_weights

    pcs, pc_std = principal_directions(G, n=n_pca)
    attrs = attribute_directions(G, n=n_attr)
    tensors = {"pca.directions": pcs, "pca.std": pc_std}
    for k, v in attrs.items():
        tensors[f"attr.{k}.direction"] = v["direction"]
        tensors[f"attr.{k}.std"] = torch.tensor(v["std"])
    return save_weights(path, tensors, {
        **(entry or {}),
        "pca_std": [round(float(s), 4) for s in pc_std],
        "attribute_boundary_accuracy": {k: round(v["accuracy"], 4) for k, v in attrs.items()},
        "attribute_positive_rate": {k: round(v["positive"], 4) for k, v in attrs.items()},
    }, half=False)


def load_directions(path: Path = DIRECTIONS_PATH) -> dict[str, torch.Tensor]:
    if not Path(path).exists():
        raise FileNotFoundError(f"no latent directions at {path}; run python -m backends.training.stylegan --export-only")
    return load_weights(path)
