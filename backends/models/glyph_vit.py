"""A small vision transformer with a class token for the cluttered glyphs (48 x 48 grey).

The glyph is cut into a 6 x 6 grid of 8 x 8 patches, one token each, plus a class token in front:
N = 37 tokens, token 0 the class token and token ``1 + r * 6 + c`` the patch in row r (y, down)
and column c (x, right). The shipped network makes each patch's token with a stem of three
stride-2 3 x 3 convolutions (the hybrid ViT of Dosovitskiy et al.; Xiao et al. 2021 show such
early convolutions make ViTs train faster): token (r, c) reads its 8 x 8 patch and a rim of 7
pixels around it. A plain linear patch embedding (``stem="linear"``) is kept, but it learned far
more slowly in the CPU budget: 59% training-batch accuracy at step 1750 (lr 3e-3) and 48% at step
1000 (lr 1e-3), against 93% at step 1750 for the conv stem (lr 2e-3); those runs were stopped. Patch
positions are the fixed 2-D sinusoidal table of ``backends.functional.position``; the class token
has a learned embedding. Each pre-norm block is ``x + attn(ln(x))`` then ``x + mlp(ln(x))`` with
the project's :class:`~backends.functional.attention.MultiheadSelfAttention`, so every head's
softmax weights (and the q and k they come from) can be read, and differentiated for relevance.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from backends.functional.attention import MultiheadSelfAttention
from backends.functional.position import SinusoidalPositionEmbedding
from backends.models.cache import cached_model
from backends.models.weights import WEIGHTS_DIR, load_metadata, load_weights

WEIGHTS_PATH = WEIGHTS_DIR / "glyph_vit_conv.safetensors"
SIZE = 48


@dataclass(frozen=True)
class ViTConfig:
    patch: int = 8
    dim: int = 64
    depth: int = 4
    heads: int = 4
    mlp: int = 128
    classes: int = 10
    position_base: float = 100.0  # 6 positions per axis: base 100 turns every pair visibly
    stem: str = "conv"  # "conv": three stride-2 3x3 convolutions; "linear": each token its patch's pixels only

    @property
    def grid(self) -> int:
        return SIZE // self.patch

    @property
    def tokens(self) -> int:
        return self.grid**2 + 1


class Block(nn.Module):
    """Pre-norm transformer block; ``forward`` returns the new tokens and the attention weights
    (B, heads, N, N) when asked for them (otherwise None and the fused kernel)."""

    def __init__(self, dim: int, heads: int, mlp: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MultiheadSelfAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Linear(mlp, dim))

    def forward(self, x: torch.Tensor, need_weights: bool = False) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        h, w = self.attn(self.norm1(x), need_weights=need_weights)
        x = x + h
        return x + self.mlp(self.norm2(x)), w


class GlyphViT(nn.Module):
    """(B, 1, 48, 48) in [0, 1] -> logits (B, classes)."""

    def __init__(self, config: ViTConfig = ViTConfig()) -> None:
        super().__init__()
        c = self.config = config
        if c.stem == "conv":  # the hybrid ViT: token (r, c) from an 8x8-strided map, seeing its patch and a rim
            if c.patch != 8:
                raise ValueError(f"the conv stem makes 8x8 patches, not {c.patch}")
            self.patch_embed = nn.Sequential(
                nn.Conv2d(1, 16, 3, 2, 1), nn.GELU(), nn.Conv2d(16, 32, 3, 2, 1), nn.GELU(),
                nn.Conv2d(32, c.dim, 3, 2, 1))
        else:
            self.patch_embed = nn.Conv2d(1, c.dim, c.patch, stride=c.patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.dim))
        self.position = SinusoidalPositionEmbedding(c.dim, c.position_base, two_d=True)
        self.blocks = nn.ModuleList(Block(c.dim, c.heads, c.mlp) for _ in range(c.depth))
        self.norm = nn.LayerNorm(c.dim)
        self.head = nn.Linear(c.dim, c.classes)
        nn.init.normal_(self.cls_token, std=0.02)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens (B, N, dim) entering the first block: the class token, then patches in raster order."""
        if x.ndim != 4 or x.shape[1:] != (1, SIZE, SIZE):
            raise ValueError(f"expected glyphs (B, 1, {SIZE}, {SIZE}), got {tuple(x.shape)}")
        g = self.config.grid
        p = self.patch_embed(x * 2.0 - 1.0).flatten(2).transpose(1, 2)  # (B, g*g, dim)
        p = self.position(p, g, g)
        return torch.cat([self.cls_token.expand(len(x), -1, -1), p], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed(x)
        for block in self.blocks:
            t, _ = block(t)
        return self.head(self.norm(t[:, 0]))

    def forward_attention(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """Logits, every block's attention weights (B, heads, N, N), first to last, and the tokens
        entering each block (B, N, dim), from which a block's own q and k follow."""
        t = self.embed(x)
        weights, inputs = [], []
        for block in self.blocks:
            inputs.append(t)
            t, w = block(t, need_weights=True)
            weights.append(w)
        return self.head(self.norm(t[:, 0])), weights, inputs


@dataclass(frozen=True)
class Explanation:
    """One forward and backward pass: probabilities (B, classes), each layer's attention and its
    gradient with respect to the target class's logit (B, heads, N, N) each, and the block inputs."""

    probabilities: torch.Tensor
    attentions: list[torch.Tensor]
    gradients: list[torch.Tensor]
    inputs: list[torch.Tensor]


def explain(model: GlyphViT, x: torch.Tensor, target: Optional[int] = None) -> Explanation:
    """Attention weights and d(logit of ``target``)/d(weights) for every layer; the target is the
    predicted class when None. Runs with autograd on whatever the caller's mode."""
    with torch.enable_grad():
        logits, weights, inputs = model.forward_attention(x)
        for w in weights:
            w.retain_grad()
        cls = logits.argmax(1) if target is None else torch.full((len(x),), int(target), device=x.device)
        logits.gather(1, cls[:, None]).sum().backward()
    return Explanation(F.softmax(logits.detach(), 1), [w.detach() for w in weights],
                       [w.grad.detach() for w in weights], [t.detach() for t in inputs])


def read_glyph_vit(path: Path) -> GlyphViT:
    """The ViT of a safetensors file (its config in the file's metadata), in eval mode, on the CPU."""
    model = GlyphViT(ViTConfig(**load_metadata(path)))
    model.load_state_dict(load_weights(path))
    return model.eval()


def load_glyph_vit(device: str | torch.device = "cpu", path: Optional[Path] = None) -> GlyphViT:
    """The shipped ViT; one copy per file version and device."""
    path = Path(path or WEIGHTS_PATH)
    if not path.is_file():
        raise FileNotFoundError(f"no glyph ViT weights at {path}; run python -m backends.training.glyph_vit")
    return cached_model(path, read_glyph_vit, device)


def config_dict(model: GlyphViT) -> dict:
    return asdict(model.config)
