"""VQ-VAE tokenizer: any photo as a map of codebook indices at 1/4 resolution, its
reconstruction and error, the codebook itself, how much of it this image uses, and token edits.

Click a token to inspect it; set ``replace_with`` to a code index to overwrite the clicked token
(and, with ``paint_radius`` > 0, a disc of tokens around it) with that code. Edits are kept in the
operator (per image and size) until the image changes or 'Clear token edits' runs.
"""

from __future__ import annotations

import colorsys
import math
from typing import Any, Iterator, Mapping, Optional

import numpy as np
import torch

from backends.data.patches import sample_patches
from backends.imaging import hwc, image_grid, resize_long_side
from backends.layers import INPUT, BarsLayer, HeatmapLayer, ImageLayer, MetricsLayer, Result
from backends.models.vqvae import DOWNSAMPLE, SHIPPED, VQVAE, perplexity, shipped_vqvae
from backends.models.weights import read_entry
from backends.params import IntParam, ParamError
from backends.registry import Action, JobUpdate, Operator, OperatorSpec, Query, query_point, register
from backends.timing import StageTimer

CODE_TILE_TOKENS = 6  # a constant map this many tokens wide is decoded per code, its centre kept
CODEBOOK_COLUMNS = 16
CODEBOOK_SCALE = 2
HIGHLIGHT = (1.0, 0.25, 0.2)  # the frame of the code 'replace_with' writes
HIGHLIGHT_PX = 4  # its width, in the grid's pixels: about 2 screen pixels as docked
MAX_CODE = 127  # the shipped codebook's last index; a larger 'replace_with' is refused
USAGE_BARS = 16  # the codes of the usage panel: this image's most used (each label legible as docked)


def token_palette(codes: int) -> np.ndarray:
    """(codes, 3) float RGB, neighbouring indices far apart in hue and lightness (categorical)."""
    out = np.empty((codes, 3), np.float32)
    for k in range(codes):
        hue = (k * 0.6180339887) % 1.0
        out[k] = colorsys.hsv_to_rgb(hue, 0.55 + 0.4 * ((k // 3) % 2), 0.65 + 0.35 * (k % 3) / 2)
    return out


@torch.no_grad()
def codebook_tiles(model: VQVAE) -> torch.Tensor:
    """Each code decoded from a constant token map, centre crop: (K, 3, 16, 16)."""
    n = CODE_TILE_TOKENS
    tokens = torch.arange(model.codes).view(-1, 1, 1).expand(-1, n, n).contiguous()
    img = model.decode(tokens.to(model.quantizer.embed.device))
    c = (n * DOWNSAMPLE - 16) // 2
    return img[:, :, c : c + 16, c : c + 16]


def paint_disc(tokens: np.ndarray, cx: int, cy: int, radius: int) -> list[tuple[int, int]]:
    """Token positions (y, x) within ``radius`` tokens of (cx, cy), inside the map (h, w)."""
    h, w = tokens.shape
    out = []
    for y in range(max(0, cy - radius), min(h, cy + radius + 1)):
        for x in range(max(0, cx - radius), min(w, cx + radius + 1)):
            if (x - cx) ** 2 + (y - cy) ** 2 <= radius * radius + 0.5:
                out.append((y, x))
    return out


@register
class VQVAETokenizer(Operator):
    spec = OperatorSpec(
        name="vqvae",
        title="VQ-VAE tokenizer",
        family="Generative",
        description=(
            "A VQ-VAE trained on patches of the bundled photos turns any image into a map of codebook "
            "indices, one per 4x4 pixels, and decodes it back. See which codes the image uses, the "
            "codebook's perplexity, where reconstruction fails, and edit tokens: click one, pick "
            "'replace_with', widen 'paint_radius' to paint a region with that code."
        ),
        params=(
            IntParam("size", 192, 64, 512, step=16, help="Long side, in pixels, the image is resized to before tokenizing."),
            IntParam("replace_with", -1, -1, MAX_CODE, help="Code written at the clicked token; -1 only inspects it."),
            IntParam("paint_radius", 0, 0, 12, help="Radius, in tokens, of the disc painted with 'replace_with'.",
                     enabled_when=(("replace_with", tuple(range(MAX_CODE + 1))),)),
        ),
        actions=(Action("clear_edits", "Clear token edits", "Forget every token edit of this image.", instant=True),),
        # The reconstruction, large: what the tokens keep of the photo reads at a glance (and against
        # the input with one keystroke); the token map's colours are arbitrary code indices, which
        # mean something only beside the reconstruction and the codebook.
        primary="Reconstruction",
        tabs=(("tokens", ("Token map", "Codebook", "Codebook usage")), ("reconstruction", ("Error map", "Metrics"))),
    )

    memo_capacity = 8
    edit = "resized"

    def __init__(self) -> None:
        super().__init__()
        self._edits: dict[tuple[int, int], int] = {}  # (y, x) token -> code
        self._edits_for: Optional[tuple] = None  # the image key and size the edits belong to

    def reset_state(self) -> None:
        super().reset_state()
        self._edits.clear()

    def job_clear_edits(self, image: torch.Tensor, params: Mapping[str, Any], query: Query) -> Iterator[JobUpdate]:
        n = len(self._edits)
        self._edits.clear()
        yield JobUpdate(1.0, f"cleared {n} token edits")

    def run(self, image: torch.Tensor, params: Mapping[str, Any], query: Query) -> Result:
        timer = StageTimer()
        model = shipped_vqvae(image.device)
        size = int(params["size"])
        _, _, H, W = image.shape
        with timer("encode"):
            enc = self.memo.stage("encode", params, ("size",), lambda: self._encode(model, image, size))
            x, tokens = enc["x"], enc["tokens"]
            h, w = tokens.shape[1:]

        if self._edits_for != (self.image_key, size):
            self._edits.clear()  # edits belong to one image at one size
            self._edits_for = (self.image_key, size)
        code = int(params["replace_with"])
        if code >= model.codes:
            raise ParamError(f"replace_with: this codebook has codes 0..{model.codes - 1}")
        qtok = None
        if query is not None:
            qx, qy = query_point(query, W, H)
            qtok = (min(w - 1, int(qx * w / W)), min(h - 1, int(qy * h / H)))
            if code >= 0:
                for pos in paint_disc(tokens[0].cpu().numpy(), qtok[0], qtok[1], int(params["paint_radius"])):
                    self._edits[pos] = code
        edited = tokens.clone()
        for (y, x_), c in self._edits.items():
            edited[0, y, x_] = c
        recon = enc["recon"]
        edits = tuple(sorted(self._edits.items()))
        with timer("decode"):
            recon_edit = recon if not edits else self.memo.stage("edited", params, ("size",), lambda: model.decode(edited),
                                                                 extra=edits)

        tok_np = edited[0].cpu().numpy()
        frame = (0.0, 0.0, float(W), float(H))
        sx, sy = W / w, H / h
        err = (recon - x).abs().mean(1)[0]
        mse = float((recon - x).square().mean())
        psnr = 10 * math.log10(1 / max(mse, 1e-12))
        counts = torch.bincount(tokens.flatten(), minlength=model.codes).float()
        book = self.memo.stage("codebook", params, (), lambda: codebook_tiles(model))
        grid = self.memo.stage("codebook grid", params, ("replace_with",), lambda: hwc(image_grid(
            book, CODEBOOK_COLUMNS, scale=CODEBOOK_SCALE, highlight=code if code >= 0 else None, highlight_color=HIGHLIGHT,
            highlight_width=HIGHLIGHT_PX)))
        train_usage = self.memo.stage("training usage", params, (), lambda: _training_usage(model))
        entry = read_entry(SHIPPED.name).get("metric", {})

        boxes: tuple = ()
        if qtok is not None:
            tx, ty = qtok
            r = int(params["paint_radius"]) if code >= 0 else 0
            boxes = ((tx * sx, ty * sy, sx, sy),)
            if r:
                boxes += (((tx - r) * sx, (ty - r) * sy, (2 * r + 1) * sx, (2 * r + 1) * sy),)
        token_map = self.memo.stage("token map", params, ("size",), lambda: token_categories(edited[0], model.codes),
                                    extra=edits)
        q_text = f"token ({qtok[0]}, {qtok[1]}) = code {int(tok_np[qtok[1], qtok[0]])}" if qtok else "click a token"
        share = counts / counts.sum()
        top = torch.argsort(-share, stable=True)[:USAGE_BARS].cpu()
        used = int((counts > 0).sum())
        cells = CODEBOOK_COLUMNS * ((model.codes + CODEBOOK_COLUMNS - 1) // CODEBOOK_COLUMNS)
        layers = (
            ImageLayer("Reconstruction", hwc(recon_edit[0]), levels=(0.0, 1.0), extent=frame,
                       caption=(f"decode(tokens) with {len(self._edits)} edited tokens" if self._edits else "decode(encode(image))")
                       + f" of the {x.shape[3]}x{x.shape[2]} tokenized input; PSNR {psnr:.1f} dB (no edits)"),
            HeatmapLayer("Error map", err, background=INPUT, levels=(0.0, 0.25), opacity=0.8, extent=frame,
                         caption="|input - reconstruction|, mean over RGB: fine texture and edges cost most"),
            ImageLayer("Token map", token_map["image"], extent=frame, categories=token_map["categories"],
                       palette=token_map["palette"], boxes=boxes,
                       caption=f"{w}x{h} tokens, coloured by code (arbitrary colours, the legend lists the most used "
                               f"first); {q_text}"),
            ImageLayer("Codebook", grid, levels=(0.0, 1.0),
                       row_labels=tuple(str(k) for k in range(0, cells, CODEBOOK_COLUMNS)),
                       column_labels=tuple(f"+{c}" if c % 4 == 0 else "" for c in range(CODEBOOK_COLUMNS)), axis_titles=("", "code"),
                       caption=f"each of the {model.codes} codes decoded from a constant map; code = row + column"
                               + (f"; code {code} framed" if code >= 0 else "")),
            BarsLayer("Codebook usage", tuple(f"code {int(k)}" for k in top),
                      {"this image": 100 * share[top], "training patches": 100 * torch.as_tensor(train_usage)[top]},
                      value_label="% of tokens",
                      caption=f"the {len(top)} codes this image uses most ({used} of {model.codes} used), "
                              "and how often the training patches use them"),
            MetricsLayer("Metrics", {
                "tokens": f"{w} x {h}",
                "codes": model.codes,
                "perplexity (this image)": round(perplexity(tokens, model.codes), 1),
                "codes used (this image)": used,
                "perplexity (fresh training crops)": entry.get("value", "n/a"),
                "bits per token": round(math.log2(model.codes), 2),
                "compression vs 8-bit RGB": f"{(DOWNSAMPLE * DOWNSAMPLE * 24) / math.log2(model.codes):.0f}x",
                "PSNR dB": round(psnr, 2),
                "edited tokens": len(self._edits),
                "query": q_text,
                **timer.metrics(),
                "run ms": round(timer.total_ms, 2),
            }),
        )
        return Result(layers)

    @staticmethod
    def _encode(model: VQVAE, image: torch.Tensor, size: int) -> dict[str, torch.Tensor]:
        x = resize_long_side(image[:, :3], size, multiple=DOWNSAMPLE, upscale=True)
        tokens = model.encode(x)
        return {"x": x, "tokens": tokens, "recon": model.decode(tokens)}


def token_categories(tokens: torch.Tensor, codes: int) -> dict[str, Any]:
    """Token map (h, w) as a categorical map: ``image`` holds each token's rank among the codes the
    map uses, most used first (ties by code), so the legend lists the most used codes first;
    ``categories`` names them ('code 19'), ``palette`` gives each code its fixed colour."""
    counts = torch.bincount(tokens.flatten().cpu(), minlength=codes)
    order = [int(c) for c in torch.argsort(-counts, stable=True) if counts[c] > 0]
    rank = torch.full((codes,), -1, dtype=torch.long)
    rank[order] = torch.arange(len(order))
    return {"image": rank[tokens.cpu()], "categories": tuple(f"code {c}" for c in order),
            "palette": token_palette(codes)[order]}


@torch.no_grad()
def _training_usage(model: VQVAE) -> np.ndarray:
    x, _ = sample_patches(256, 12345, 32, split="train")
    counts = torch.bincount(model.encode(x.to(model.quantizer.embed.device)).flatten(), minlength=model.codes).float()
    return (counts / counts.sum()).cpu().numpy()
