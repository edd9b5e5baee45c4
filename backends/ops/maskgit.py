"""Masked-token generation (MaskGIT-style) on VQ-VAE tokens, decoded step by step.

Generation starts from an 8x8 map of MASK tokens; each round the transformer samples every masked
token, the most confident samples are kept and the rest re-masked, with the number left masked
following the schedule. ``show_step`` scrubs through the rounds: which tokens are masked, kept or
new, how confident the model was, and the image decoded at that round. ``mode = inpaint input``
tokenizes the input image instead, masks a box of tokens around the clicked point and fills it from
the surrounding 8x8 window of tokens. Panel names stay the same while scrubbing (the round is in
the captions), so the panels keep their places.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import torch

from backends.imaging import grid_cell, hwc, image_grid, resize_long_side, upscale_nearest
from backends.layers import CurveLayer, HeatmapLayer, ImageLayer, MetricsLayer, Result
from backends.models.maskgit import SCHEDULES, DecodeTrace, MaskGIT, decode, masked_counts, shipped_maskgit
from backends.models.vqvae import DOWNSAMPLE, VQVAE, shipped_vqvae
from backends.params import ChoiceParam, FloatParam, IntParam, ParamError, SeedParam
from backends.registry import Operator, OperatorSpec, Query, query_point, register
from backends.timing import StageTimer

MODES = ("generate", "inpaint input")
BATCH = 4  # samples generated together; the step panels follow the first
MASKED_GREY = 0.5
CONTEXT_MARGIN = 3  # tokens around the window decoded with it (the VQ decoder's reach)
DECODE_INPUTS = ("steps", "schedule", "temperature", "seed", "choice_noise")  # what one decode reads
STATES = ("masked", "kept", "new this round")  # a token's state after the shown round: 0, 1, 2
STATE_PALETTE = np.array([[0.42, 0.42, 0.42], [0.25, 0.55, 0.9], [1.0, 0.78, 0.1]], np.float32)
FRAME = (1.0, 0.85, 0.1)
FRAME_PX = 2
INPAINT = (("mode", ("inpaint input",)),)
SAMPLE_COLUMNS = 2
STRIP_SCALE = 2


def window_origin(center: int, size: int, extent: int) -> int:
    """Top-left of a ``size`` window centred near ``center`` and inside [0, extent)."""
    return int(min(max(center - size // 2, 0), max(extent - size, 0)))


@register
class MaskedTokenGeneration(Operator):
    spec = OperatorSpec(
        name="maskgit",
        title="Masked-token generation (MaskGIT)",
        family="Generative",
        description=(
            "A small bidirectional transformer fills a map of VQ-VAE tokens in a few parallel rounds: "
            "each round samples every masked token and keeps the most confident ones; the schedule says "
            "how many stay masked. Scrub 'show_step' to watch the image form, or switch to 'inpaint "
            "input' and click the image to regenerate a box of tokens from its surroundings."
        ),
        params=(
            ChoiceParam("mode", "generate", MODES, help="Generate 8x8-token images from nothing, or inpaint a box of the input."),
            IntParam("steps", 8, 4, 16, help="Decoding rounds."),
            ChoiceParam("schedule", "cosine", SCHEDULES, help="Fraction still masked after round t of T: cos(pi/2 t/T), 1 - t/T or 1 - (t/T)^2."),
            FloatParam("temperature", 1.0, 0.1, 3.0, step=0.05, help="Divides the logits before sampling: low is safe and flat, high is varied and noisy."),
            FloatParam("choice_noise", 4.5, 0.0, 10.0, step=0.5,
                       help="Gumbel noise on the confidences that pick which samples to keep, fading over the rounds; "
                            "0 keeps the most confident (flat colour first, flat images)."),
            SeedParam("seed", 0),
            IntParam("show_step", 3, 1, 16, help="Which round the step panels show (clipped to 'steps')."),
            IntParam("box", 4, 1, 8, help="Inpainting: side, in tokens (4 px each at the tokenized size), of the masked box around the click.",
                     enabled_when=INPAINT),
            IntParam("size", 192, 64, 512, step=16, help="Inpainting: long side the input is resized to before tokenizing.",
                     enabled_when=INPAINT),
        ),
        primary="Output",  # the samples, or the inpainted image
        tabs=(("the shown round", ("Token states", "Step image", "Confidence", "All steps")),
              ("order and schedule", ("Decoding order", "Confidence per round", "Schedule")),
              ("window and numbers", ("Inpainting window", "Metrics"))),  # the window: inpainting only
    )

    memo_capacity = 12
    edit = "resized"

    def run(self, image: torch.Tensor, params: Mapping[str, Any], query: Query) -> Result:
        timer = StageTimer()
        vq = shipped_vqvae(image.device)
        mg = shipped_maskgit(image.device)
        if mg.config.codes != vq.codes:
            raise ParamError("the shipped MaskGIT and VQ-VAE disagree on the codebook size")
        steps = int(params["steps"])
        show = min(int(params["show_step"]), steps)
        dec_args = tuple(params[k] for k in DECODE_INPUTS)
        inpaint = params["mode"] == "inpaint input"
        with timer("decode"):
            if inpaint:
                size_px = int(params["size"])
                click = query_point(query, image.shape[3], image.shape[2])
                enc = self.memo.stage("encode", params, ("size",), lambda: self._encode(vq, image, size_px))
                job = self.memo.stage("inpaint", params, DECODE_INPUTS + ("box", "size"), extra=click, compute=lambda: (
                    self._inpaint(vq, mg, image, enc, dec_args, int(params["box"]), size_px, click)))
            else:
                job = self.memo.stage("generate", params, DECODE_INPUTS, lambda: self._generate(vq, mg, dec_args))
        trace: DecodeTrace = job["trace"]
        s = show - 1
        size = mg.config.size
        state = np.where(trace.new[s, 0], 2, np.where(trace.fixed[s, 0], 1, 0)).astype(np.int64)
        n_new = int(trace.new[s, 0].sum())
        masked_left = trace.counts[s]
        kept = int(trace.fixed[s, 0].sum()) - n_new
        sampled = ~np.isnan(trace.confidence[s, 0])
        curve_x = np.arange(0, steps + 1, dtype=np.float32)
        n0 = int(job["n_masked"])
        curves = {name: (curve_x, np.array([n0] + masked_counts(n0, steps, name), np.float32)) for name in SCHEDULES}
        kept_conf, remasked_conf = _mean_confidences(trace)
        confidences = {k: v for k, v in (("kept tokens", kept_conf), ("re-masked tokens", remasked_conf)) if len(v[0])}
        strip_h = job["strip"].shape[0]
        cx, _, cw, _ = grid_cell(s, steps, (size * DOWNSAMPLE, size * DOWNSAMPLE), scale=STRIP_SCALE)
        rnd = f"round {show} of {steps}"
        layers = [
            job["output"],
            ImageLayer("Token states", state, categories=STATES, palette=STATE_PALETTE,
                       caption=f"{rnd}: {_count(n_new, 'token')} new this round, {kept} kept from before"
                               f"{' (given or earlier rounds)' if inpaint else ''}, {masked_left} still masked"),
            ImageLayer("Step image", job["step_images"][s], levels=(0.0, 1.0),
                       caption=f"{rnd}: the kept tokens plus this round's samples for the masked ones, decoded by the VQ-VAE"),
            HeatmapLayer("Confidence", 100 * trace.confidence[s, 0], levels=(0.0, job["confidence_top"]), colormap="inferno",
                         boxes=tuple((float(x), float(y), 1.0, 1.0) for y, x in zip(*np.nonzero(trace.new[s, 0]))),
                         caption=f"{rnd}: the probability (%) of the token sampled at each of the {int(sampled.sum())} "
                                 "positions masked before the round (blank: kept earlier); framed: the ones kept. "
                                 f"Colours span 0 to {job['confidence_top']:g}%, the most of any round, so rounds compare"),
            ImageLayer("All steps", job["strip"], levels=(0.0, 1.0),
                       row_labels=("sampled", "kept"), column_labels=tuple(str(t) for t in range(1, steps + 1)),
                       axis_titles=("round", ""), boxes=((float(cx), 0.0, float(cw), float(strip_h)),),
                       caption="each round left to right; top: kept tokens plus the round's samples, bottom: the kept "
                               f"tokens alone (grey: still masked); round {show} framed"),
            HeatmapLayer("Decoding order", _decoding_order(trace), levels=(0.0, float(steps)), colormap="viridis",
                         caption="the round in which each token was kept (0: given, not generated)"),
            CurveLayer("Confidence per round", confidences,
                       x_label="round", y_label="mean probability of the sampled token (%)",
                       caption="each round keeps its most confident samples (with the choice noise, not strictly): "
                               "the kept ones' mean confidence against the re-masked ones'"),
            CurveLayer("Schedule", curves, x_label="round", y_label="tokens still masked",
                       caption=f"{n0} masked tokens, {steps} rounds; this decode follows '{params['schedule']}'"),
        ]
        if inpaint:
            layers.append(ImageLayer("Inpainting window", job["compare"], levels=(0.0, 1.0),
                                     column_labels=("before", "masked", "after"),
                                     caption="the 8x8-token window the transformer sees: its reconstruction, with the box "
                                             "masked, and inpainted"))
        layers.append(MetricsLayer("Metrics", {
            "round": f"{show} / {steps}",
            "fixed this round": n_new,
            "still masked": masked_left,
            "mean confidence (this round)": round(float(np.nanmean(trace.confidence[s, 0])) if n_new + masked_left else 0.0, 3),
            "tokens": f"{size} x {size} of {vq.codes} codes",
            "transformer parameters": sum(p.numel() for p in mg.parameters()),
            **timer.metrics(digits=1),
            "run ms": round(timer.total_ms, 1),
        }))
        return Result(tuple(layers))

    @staticmethod
    def _steps_to_images(vq: VQVAE, trace: DecodeTrace, context: torch.Tensor | None = None,
                         origin: tuple[int, int] = (0, 0)) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Per round the decoded window (sample 0, HWC), and a strip of every round: on top the
        kept tokens plus that round's samples, below the kept tokens alone (masked ones grey)."""
        toks = torch.from_numpy(trace.tokens[:, 0]).long()  # (steps, s, s)
        s = toks.shape[1]
        if context is not None:
            # Decode the window inside a margin of its surrounding tokens so its borders match the image.
            oy, ox = origin
            h, w = context.shape[1:]
            y0, x0 = max(0, oy - CONTEXT_MARGIN), max(0, ox - CONTEXT_MARGIN)
            y1, x1 = min(h, oy + s + CONTEXT_MARGIN), min(w, ox + s + CONTEXT_MARGIN)
            part = context[:, y0:y1, x0:x1].expand(len(toks), -1, -1).clone()
            part[:, oy - y0 : oy - y0 + s, ox - x0 : ox - x0 + s] = toks
            imgs = vq.decode(part.to(vq.quantizer.embed.device))
            p = DOWNSAMPLE
            imgs = imgs[:, :, (oy - y0) * p : (oy - y0 + s) * p, (ox - x0) * p : (ox - x0 + s) * p]
        else:
            imgs = vq.decode(toks.to(vq.quantizer.embed.device))
        masked = upscale_nearest(torch.from_numpy(~trace.fixed[:, 0]).to(imgs.device), DOWNSAMPLE)  # (steps, px, px)
        greyed = imgs.masked_fill(masked[:, None], MASKED_GREY)
        strip = hwc(image_grid(torch.cat([imgs, greyed]), len(imgs), scale=STRIP_SCALE))
        return [hwc(im) for im in imgs], strip

    def _generate(self, vq: VQVAE, mg: MaskGIT, dec_args: tuple) -> dict[str, Any]:
        steps, schedule, temperature, seed, noise = dec_args
        s = mg.config.size
        device = vq.quantizer.embed.device
        tokens = torch.zeros((BATCH, s, s), dtype=torch.long, device=device)
        mask = torch.ones((BATCH, s, s), dtype=torch.bool, device=device)
        trace = decode(mg, tokens, mask, steps, schedule, temperature, seed, noise)
        step_images, strip = self._steps_to_images(vq, trace)
        finals = vq.decode(torch.from_numpy(trace.final).long().to(device))
        samples = hwc(image_grid(finals, SAMPLE_COLUMNS, scale=2, highlight=0, highlight_color=FRAME, highlight_width=1))
        output = ImageLayer("Output", samples, levels=(0.0, 1.0),
                            caption=f"{BATCH} samples (seed {seed}) after {steps} rounds, decoded by the VQ-VAE; the round "
                                    "panels follow the framed one")
        return {"trace": trace, "step_images": step_images, "strip": strip, "n_masked": s * s, "output": output,
                "confidence_top": _percent_ceiling(trace)}

    @staticmethod
    def _encode(vq: VQVAE, image: torch.Tensor, size: int) -> dict[str, torch.Tensor]:
        tokens = vq.encode(resize_long_side(image[:, :3], size, multiple=DOWNSAMPLE, upscale=True))
        return {"tokens": tokens, "recon": hwc(vq.decode(tokens)[0])}

    def _inpaint(self, vq: VQVAE, mg: MaskGIT, image: torch.Tensor, enc: dict, dec_args: tuple, box: int, size: int,
                 click: tuple[int, int]) -> dict[str, Any]:
        steps, schedule, temperature, seed, noise = dec_args
        s = mg.config.size
        _, _, H, W = image.shape
        tokens = enc["tokens"]
        h, w = tokens.shape[1:]
        if h < s or w < s:
            raise ParamError(f"size {size} gives a {w}x{h} token map; inpainting needs at least {s}x{s}: raise 'size'")
        qx, qy = click
        tx, ty = min(w - 1, int(qx * w / W)), min(h - 1, int(qy * h / H))
        ox, oy = window_origin(tx, s, w), window_origin(ty, s, h)
        bx, by = window_origin(tx - ox, box, s), window_origin(ty - oy, box, s)
        window = tokens[:, oy : oy + s, ox : ox + s].clone()
        mask = torch.zeros_like(window, dtype=torch.bool)
        mask[:, by : by + box, bx : bx + box] = True
        trace = decode(mg, window, mask, steps, schedule, temperature, seed, noise)
        step_images, strip = self._steps_to_images(vq, trace, tokens.cpu(), (oy, ox))
        p = DOWNSAMPLE
        before = enc["recon"]
        full = before.clone()  # the reconstruction with the window's decode pasted in
        full[oy * p : (oy + s) * p, ox * p : (ox + s) * p] = step_images[-1]
        crop = before[oy * p : (oy + s) * p, ox * p : (ox + s) * p]
        masked = crop.clone()
        masked[by * p : (by + box) * p, bx * p : (bx + box) * p] = MASKED_GREY
        compare = hwc(image_grid(torch.stack([crop, masked, step_images[-1]]).permute(0, 3, 1, 2), 3, scale=2))
        sx, sy = W / (w * p), H / (h * p)
        window_box = (ox * p * sx, oy * p * sy, s * p * sx, s * p * sy)
        mask_box = ((ox + bx) * p * sx, (oy + by) * p * sy, box * p * sx, box * p * sy)
        output = ImageLayer("Output", full, levels=(0.0, 1.0), extent=(0.0, 0.0, float(W), float(H)),
                            boxes=(window_box, mask_box),
                            caption=f"the input tokenized at {w * p}x{h * p} px with the inner box of {box}x{box} tokens "
                                    f"regenerated from the outer {s}x{s}-token window around the click, decoded")
        return {"trace": trace, "step_images": step_images, "strip": strip, "n_masked": box * box, "output": output,
                "compare": compare, "confidence_top": _percent_ceiling(trace)}


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _percent_ceiling(trace: DecodeTrace) -> float:
    """The largest confidence of sample 0 over every round, in %, rounded up to a step of 5 (at
    most 100): a colour scale that shows the small probabilities of a 128-code model."""
    top = float(np.nanmax(trace.confidence[:, 0])) * 100
    return float(min(100, 5 * math.ceil(max(top, 1e-6) / 5)))


def _mean_confidences(trace: DecodeTrace) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Per round (1-based, sample 0): the mean probability (%) of the samples kept that round, and
    of those masked again; a round with none of either has no point in that curve."""
    kept: list[tuple[int, float]] = []
    remasked: list[tuple[int, float]] = []
    for t in range(trace.new.shape[0]):
        conf, new, still = trace.confidence[t, 0], trace.new[t, 0], ~trace.fixed[t, 0]
        if new.any():
            kept.append((t + 1, 100 * float(conf[new].mean())))
        if still.any():
            remasked.append((t + 1, 100 * float(conf[still].mean())))

    def curve(points: list[tuple[int, float]]) -> tuple[np.ndarray, np.ndarray]:
        return np.array([p[0] for p in points], np.float32), np.array([p[1] for p in points], np.float32)

    return curve(kept), curve(remasked)


def _decoding_order(trace: DecodeTrace) -> np.ndarray:
    """(s, s) round (1-based) in which each token of sample 0 was fixed; 0 where it was given."""
    order = np.zeros(trace.new.shape[2:], np.float32)
    for t in range(trace.new.shape[0]):
        order[trace.new[t, 0]] = t + 1
    return order
