"""StyleGAN-style generator on cartoon faces: seeds, truncation, noise, style mixing, GANSpace and
InterFaceGAN directions, z-versus-w interpolation, and projection of the input image into w / w+.

Everything runs on the shipped 32x32 EMA generator (assets/weights/stylegan_faces.safetensors) and
its precomputed directions, or (``weights = trained``) on the generator the Train action last saved
in the user's data folder, with directions fitted for it when it was saved. Panels are memoized on their own inputs: the latent-edit sliders
(psi, mixing, noise, directions) only redraw the edited face, the mixing strip and the classifier
read-out; the overview grids follow the seeds. Images are shown upscaled with nearest neighbour.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

import numpy as np
import torch
import torch.nn.functional as F

from backends.layers import BarsLayer, CurveLayer, ImageLayer, MetricsLayer, Result
from backends.memo import Memo
from backends.models.stylegan import (
    ATTRIBUTE_DIRECTIONS,
    DIRECTIONS_PATH,
    LAYER_GROUPS,
    LAYER_NAMES,
    NOISE_LAYERS,
    NUM_WS,
    WEIGHTS_PATH,
    attributes_from_z,
    load_directions,
    load_generator,
    parameter_count,
    to_unit,
    z_from_seed,
)
from backends.models.weights import data_dir
from backends.params import BoolParam, ChoiceParam, FloatParam, IntParam, ParamError, SeedParam
from backends.registry import Action, JobUpdate, Operator, OperatorSpec, Query, register
from backends.training.loop import training_job

NOISE_MODES = ("on", "off", "per-layer")
EDIT_LAYERS = ("all", "coarse", "middle", "fine")
SOURCES = ("seed", "projection")
NUM_PCS = 5
SCALE = 8  # single faces, 32 -> 256 px
GRID_SCALE = 4  # grids and strips
BROWSER_SIDE = 4
STRIP = 8
DIRECTION_STEPS = (-2.0, -1.0, 0.0, 1.0, 2.0)
TRUNCATION_STRIP = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5)
RESULT_INTERVAL_S = 0.1
PREVIEW_EVERY = 25  # Train: steps between sample-grid refreshes
TRAIN_POOL = 5000  # Train: data faces drawn once at the start (the script uses 40,000)
TRAIN_DIRECTION_SAMPLES = 1000  # Train: samples labelled to fit the attribute directions on save
TRAIN_PCA_SAMPLES = 5000


def trained_path() -> Path:
    return data_dir() / "stylegan_faces_trained.safetensors"


def trained_directions_path() -> Path:
    return data_dir() / "stylegan_faces_trained_directions.safetensors"


def model_paths(weights: str) -> tuple[Path, Path]:
    """(generator, directions) files for ``weights`` = shipped or trained."""
    if weights == "trained":
        path, dirs = trained_path(), trained_directions_path()
        if not path.is_file() or not dirs.is_file():
            raise ParamError("no trained generator yet: press 'Start Train' first, or choose weights = shipped")
        return path, dirs
    return WEIGHTS_PATH, DIRECTIONS_PATH


def _group_of(i: int) -> str:
    return next(g for g, idx in LAYER_GROUPS.items() if i in idx)


PARAMS = (
    ChoiceParam("weights", "shipped", ("shipped", "trained"), help="Shipped generator, or the one the Train action saved."),
    SeedParam("seed", 5, help="Seed of z (a NumPy RandomState per seed, as in StyleGAN's tools)."),
    FloatParam("psi", 1.0, 0.0, 1.5, step=0.05, help="Truncation: w = w_avg + psi (w - w_avg); 0 gives the mean face for every seed."),
    ChoiceParam("noise", "on", NOISE_MODES, help="Noise inputs: on (fixed maps), off, or on scaled per layer by noise_1..7."),
    *(FloatParam(f"noise_{i + 1}", 1.0, 0.0, 10.0, step=0.1, help=f"Noise gain at layer {LAYER_NAMES[i]} (per-layer mode).")
      for i in range(NOISE_LAYERS)),
    SeedParam("mix_seed", 11, help="Second seed: source of mixed styles and the other end of the interpolations."),
    *(BoolParam(f"mix_{i}", False, help=f"Take the style of layer {LAYER_NAMES[i]} ({_group_of(i)}) from mix_seed.")
      for i in range(NUM_WS)),
    *(FloatParam(f"pc_{k + 1}", 0.0, -4.0, 4.0, step=0.1, help=f"GANSpace: principal direction {k + 1} of w, in standard deviations.")
      for k in range(NUM_PCS)),
    FloatParam("smile", 0.0, -4.0, 4.0, step=0.1, help="InterFaceGAN: normal of the smile/frown boundary in w, in standard deviations."),
    FloatParam("glasses", 0.0, -4.0, 4.0, step=0.1, help="InterFaceGAN: normal of the glasses boundary in w, in standard deviations."),
    FloatParam("tilt", 0.0, -4.0, 4.0, step=0.1, help="InterFaceGAN: normal of the tilt-sign boundary in w, in standard deviations."),
    ChoiceParam("edit_layers", "all", EDIT_LAYERS, help="Layers whose styles the direction sliders move (coarse 0-2, middle 3-4, fine 5-7)."),
    ChoiceParam("source", "seed", SOURCES, help="Edit the seed's latent, or the latent found by the last Project."),
    ChoiceParam("project_space", "w+", ("w", "w+"), help="Project into one w for all layers, or one w per layer (w+)."),
    IntParam("project_steps", 200, 10, 2000, step=10, help="Optimization steps of Project."),
    FloatParam("project_lr", 0.05, 0.001, 0.5, step=0.005, help="Adam step size of Project."),
    IntParam("train_steps", 2000, 10, 50000, step=10,
             help="Steps of the Train action (one D and one G update of 32 faces each; about 0.3 s per step on one CPU core)."),
)


@dataclass
class Projection:
    ws: torch.Tensor  # (1, NUM_WS, W_DIM)
    target: torch.Tensor  # (1, 3, 32, 32) in [0, 1]
    space: str
    steps: list[int]
    loss: list[float]


@register
class StyleGANOperator(Operator):
    spec = OperatorSpec(
        name="stylegan",
        title="StyleGAN faces",
        family="Generative",
        description=(
            "A StyleGAN2-like generator trained here on procedural cartoon faces (32x32). z goes through a "
            "mapping network to w; each layer's modulated convolution takes its own style, so styles can be "
            "mixed between seeds by coarse, middle and fine layers. Truncation pulls w to the mean face. "
            "Sliders move w along principal directions (GANSpace) and along attribute boundaries fitted "
            "with a classifier (InterFaceGAN). Project finds the w or w+ that reproduces the input image. "
            "The mapping network also reads the face attributes (mouth, tilt, glasses, hair), which each seed "
            "draws from the data's distribution. Train trains a fresh generator here; weights = trained selects it."
        ),
        params=PARAMS,
        uses_query=False,
        actions=(Action("project", "Project", "Optimize w or w+ so the generator reproduces the input image resized to 32x32."),
                 Action("train", "Train", "Train a fresh conditional generator on the cartoon faces on the worker; saved "
                        "to your data folder and selectable with weights = trained.")),
    )

    def __init__(self) -> None:
        self._memo = Memo(capacity=24)
        self._w_cache: dict[int, torch.Tensor] = {}
        self._G = None
        self._model_key = None
        self._dirs: Optional[dict[str, torch.Tensor]] = None
        self._projection: Optional[Projection] = None

    def reset_state(self) -> None:
        self._memo.clear()
        self._w_cache.clear()
        self._projection = None

    # -- model and latents ---------------------------------------------------------------------
    def _model(self, device: torch.device, weights: str = "shipped"):
        path, dirs_path = model_paths(weights)
        key = (str(path), path.stat().st_mtime_ns, str(device))
        if self._G is None or self._model_key != key:
            self._G = load_generator(path, device=str(device))
            self._model_key = key
            self._dirs = {k: v.to(device) for k, v in load_directions(dirs_path).items()}
            self._noise_maps = self._G.synthesis.make_noise(1, "const", device=device)
            self._memo.clear()
            self._w_cache.clear()
        return self._G

    def _w(self, seed: int) -> torch.Tensor:
        """Mapped w (W_DIM,) of a seed, cached: the mapping runs once per seed."""
        w = self._w_cache.get(seed)
        if w is None:
            if len(self._w_cache) > 4096:
                self._w_cache.clear()
            w = self._w_cache[seed] = self._G.mapping(z_from_seed(seed, self._G.w_avg.device))[0]
        return w

    def _ws_many(self, seeds) -> torch.Tensor:
        """(N, NUM_WS, W_DIM) for several seeds, mapping only the uncached ones in one batch."""
        missing = [s for s in dict.fromkeys(seeds) if s not in self._w_cache]
        if missing:
            w = self._G.mapping(z_from_seed(missing, self._G.w_avg.device))
            self._w_cache.update(zip(missing, w))
        return torch.stack([self._w_cache[s] for s in seeds])[:, None].expand(-1, NUM_WS, -1)

    def _truncate(self, ws: torch.Tensor, psi: float) -> torch.Tensor:
        return ws if psi == 1.0 else self._G.w_avg + psi * (ws - self._G.w_avg)

    def _synth(self, ws: torch.Tensor, noise: str, gains=None) -> torch.Tensor:
        """(N, NUM_WS, W_DIM) -> (N, 3, 32, 32) in [0, 1]."""
        n = ws.shape[0]
        maps = [None] * NOISE_LAYERS if noise == "off" else [m.expand(n, -1, -1, -1) for m in self._noise_maps]
        return to_unit(self._G.synthesis(ws, maps, gains))

    def _base_ws(self, params: Mapping[str, Any]) -> tuple[torch.Tensor, str]:
        """The untruncated latent being edited: the seed's, or the last projection's."""
        if params["source"] == "projection":
            if self._projection is None:
                return self._ws_many([params["seed"]]), "no projection yet: press Project; showing the seed"
            return self._projection.ws, f"projection ({self._projection.space}, {self._projection.steps[-1]} steps)"
        return self._ws_many([params["seed"]]), f"seed {params['seed']}"

    def _edit_delta(self, params: Mapping[str, Any]) -> torch.Tensor:
        """(NUM_WS, W_DIM) offset of the direction sliders, restricted to ``edit_layers``."""
        d = self._dirs
        delta = torch.zeros_like(self._G.w_avg)
        for k in range(NUM_PCS):
            v = float(params[f"pc_{k + 1}"])
            if v:
                delta = delta + v * d["pca.std"][k] * d["pca.directions"][k]
        for a in ATTRIBUTE_DIRECTIONS:
            v = float(params[a])
            if v:
                delta = delta + v * d[f"attr.{a}.std"] * d[f"attr.{a}.direction"]
        mask = torch.zeros(NUM_WS, 1, device=delta.device)
        layers = range(NUM_WS) if params["edit_layers"] == "all" else LAYER_GROUPS[params["edit_layers"]]
        mask[list(layers)] = 1.0
        return mask * delta

    def _mixed(self, ws: torch.Tensor, ws_b: torch.Tensor, layers) -> torch.Tensor:
        out = ws.clone()
        idx = list(layers)
        out[:, idx] = ws_b[:, idx]
        return out

    # -- run -----------------------------------------------------------------------------------
    def run(self, image: torch.Tensor, params: Mapping[str, Any], query: Query) -> Result:
        t0 = time.perf_counter()
        G = self._model(image.device, params["weights"])
        psi, seed, mix_seed = float(params["psi"]), int(params["seed"]), int(params["mix_seed"])
        overview_noise = "off" if params["noise"] == "off" else "on"
        proj_key = id(self._projection)
        timings = {}

        # The edited face: base latent, truncation, mixing, direction offsets, noise.
        base, base_text = self._base_ws(params)
        ws_b = self._truncate(self._ws_many([mix_seed]), psi)
        ws = self._truncate(base, psi)
        mixed_layers = [i for i in range(NUM_WS) if params[f"mix_{i}"]]
        if mixed_layers:
            ws = self._mixed(ws, ws_b, mixed_layers)
        ws = ws + self._edit_delta(params)
        gains = [float(params[f"noise_{i + 1}"]) for i in range(NOISE_LAYERS)] if params["noise"] == "per-layer" else None
        face = self._synth(ws, params["noise"], gains)
        timings["edited face ms"] = (time.perf_counter() - t0) * 1e3

        t1 = time.perf_counter()
        readout = self._readout(face)
        timings["classifier ms"] = (time.perf_counter() - t1) * 1e3

        t1 = time.perf_counter()
        mean_face = self._memo.get(("mean", overview_noise), lambda: _upscale(
            self._synth(G.w_avg[None, None].expand(1, NUM_WS, -1), overview_noise)[0], SCALE))
        mixing = self._memo.get(("mixing", params["source"], proj_key, seed, mix_seed, psi, overview_noise),
                                lambda: _grid(self._mixing_strip(base, ws_b, psi, overview_noise), 5, GRID_SCALE))
        timings["mixing ms"] = (time.perf_counter() - t1) * 1e3

        t1 = time.perf_counter()
        first = max(0, seed - (BROWSER_SIDE * BROWSER_SIDE // 2 - 1))
        browser = self._memo.get(("browser", seed, overview_noise), lambda: _grid(
            self._browser(first, overview_noise), BROWSER_SIDE, GRID_SCALE, frame=seed - first))
        truncation = self._memo.get(("trunc", params["source"], proj_key, seed, overview_noise), lambda: _grid(
            self._truncation_strip(base, overview_noise), len(TRUNCATION_STRIP), GRID_SCALE))
        interp = self._memo.get(("interp", seed, mix_seed, overview_noise), lambda: self._interpolations(seed, mix_seed, overview_noise))
        dirs = self._memo.get(("dirs", params["source"], proj_key, seed, overview_noise), lambda: self._direction_grids(base, overview_noise))
        projection = self._memo.get(("projection", id(image), proj_key, len(self._projection.steps) if self._projection else 0),
                                    lambda: self._projection_layers(image))
        timings["overview grids ms"] = (time.perf_counter() - t1) * 1e3

        mix_text = ", ".join(LAYER_NAMES[i] for i in mixed_layers) or "none"
        layers = [
            ImageLayer("Generated", _upscale(face[0], SCALE), levels=(0.0, 1.0),
                       caption=f"{params['weights']} generator, {base_text}{self._c_text(params)}, psi {psi:g}, noise {params['noise']}, "
                               f"layers from seed {mix_seed}: {mix_text}"),
            ImageLayer("Mean face (w_avg)", mean_face, levels=(0.0, 1.0),
                       caption="the generator's running mean of w, decoded: every seed at psi = 0"),
            ImageLayer("Seed browser", browser, levels=(0.0, 1.0),
                       caption=f"seeds {first}..{first + BROWSER_SIDE ** 2 - 1} at psi 1 (seed {seed} framed)"),
            ImageLayer("Style mixing", mixing, levels=(0.0, 1.0),
                       caption=f"A = {base_text}, B = seed {mix_seed}, psi {psi:g}: A | B | A with B's coarse (4-8 px) | "
                               f"middle (16 px) | fine (32 px) styles; the mix_* boxes pick layers for Generated"),
            ImageLayer("Truncation", truncation, levels=(0.0, 1.0),
                       caption="psi = " + ", ".join(f"{p:g}" for p in TRUNCATION_STRIP)),
            ImageLayer("Interpolation in z", interp["z"], levels=(0.0, 1.0),
                       caption=f"slerp in z from seed {seed} to {mix_seed}; mean step {interp['z_step']:.3f} (max {interp['z_max']:.3f})"),
            ImageLayer("Interpolation in w", interp["w"], levels=(0.0, 1.0),
                       caption=f"lerp in w from seed {seed} to {mix_seed}; mean step {interp['w_step']:.3f} (max {interp['w_max']:.3f})"),
            ImageLayer("Principal directions (GANSpace)", dirs["pca"], levels=(0.0, 1.0),
                       caption=f"rows PC 1..{NUM_PCS}; columns " + ", ".join(f"{s:+g}" for s in DIRECTION_STEPS) + " std, all layers, psi 1"),
            ImageLayer("Attribute directions (InterFaceGAN)", dirs["attr"], levels=(0.0, 1.0),
                       caption="rows " + ", ".join(ATTRIBUTE_DIRECTIONS) + "; columns " + ", ".join(f"{s:+g}" for s in DIRECTION_STEPS) + " std"),
            *projection,
            BarsLayer("Attributes read by the classifier", readout[0], {"edited face": readout[1]}, y_range=(-1.0, 1.0),
                      caption=readout[2]),
        ]
        timings["total ms"] = (time.perf_counter() - t0) * 1e3
        layers.append(MetricsLayer("Metrics", {
            "generator parameters": parameter_count(G),
            "distance of w from w_avg": round(float((ws - G.w_avg).norm(dim=-1).mean()), 3),
            **{f"cos(PC1, {a})": round(float(self._dirs["pca.directions"][0] @ self._dirs[f"attr.{a}.direction"]), 3)
               for a in ATTRIBUTE_DIRECTIONS},
            "cos(smile, tilt)": round(float(self._dirs["attr.smile.direction"] @ self._dirs["attr.tilt.direction"]), 3),
            **{k: round(v, 2) for k, v in timings.items()},
        }))
        return Result(tuple(layers))

    def _c_text(self, params: Mapping[str, Any]) -> str:
        """The attributes a conditional generator reads from the seed's z (empty otherwise)."""
        if not getattr(self._G, "c_dim", 0) or params["source"] != "seed":
            return ""
        c = attributes_from_z(z_from_seed(int(params["seed"])))[0]
        hair = ("no hair", "short hair", "long hair")[int(c[3:].argmax())]
        return (f" (c: mouth {float(c[0]):+.2f}, tilt {float(c[1]) * 30:+.0f} deg, "
                f"{'glasses' if c[2] > 0.5 else 'no glasses'}, {hair})")

    # -- panels --------------------------------------------------------------------------------
    def _readout(self, face: torch.Tensor) -> tuple[tuple[str, ...], np.ndarray, str]:
        from backends.models.attribute_classifier import load_classifier

        clf = load_classifier(device=str(face.device))
        _, logits, reg = clf(face)
        p = {k: torch.softmax(v, 1)[0] for k, v in logits.items()}
        labels = ("smile", "P(glasses)", "P(no hair)", "P(short hair)", "P(long hair)", "tilt / 30 deg")
        values = np.array([float(reg[0, 0]), float(p["glasses"][1]), *[float(v) for v in p["hair"]], float(reg[0, 1])], np.float32)
        caption = (f"smile {values[0]:+.2f} ({'smile' if values[0] > 0 else 'frown'}), tilt {values[5] * 30:+.1f} deg, "
                   f"glasses {values[1]:.0%}, hair {('none', 'short', 'long')[int(p['hair'].argmax())]}")
        return labels, values, caption

    def _mixing_strip(self, base, ws_b, psi, noise) -> torch.Tensor:
        a = self._truncate(base, psi)
        rows = [a, ws_b] + [self._mixed(a, ws_b, LAYER_GROUPS[g]) for g in ("coarse", "middle", "fine")]
        return self._synth(torch.cat(rows), noise)

    def _browser(self, first: int, noise: str) -> torch.Tensor:
        return self._synth(self._ws_many(list(range(first, first + BROWSER_SIDE * BROWSER_SIDE))), noise)

    def _truncation_strip(self, base, noise) -> torch.Tensor:
        return self._synth(torch.cat([self._truncate(base, p) for p in TRUNCATION_STRIP]), noise)

    def _interpolations(self, seed: int, mix_seed: int, noise: str) -> dict:
        dev = self._G.w_avg.device
        t = torch.linspace(0, 1, STRIP, device=dev)[:, None]
        za, zb = z_from_seed([seed, mix_seed], dev)
        z = _slerp(za, zb, t)
        ws_z = self._G.mapping(z)[:, None].expand(-1, NUM_WS, -1)
        wa, wb = self._ws_many([seed, mix_seed])[:, 0]
        ws_w = (wa + t * (wb - wa))[:, None].expand(-1, NUM_WS, -1)
        imgs = self._synth(torch.cat([ws_z, ws_w]), noise)
        out = {}
        for k, strip in (("z", imgs[:STRIP]), ("w", imgs[STRIP:])):
            # How evenly the image changes along the path (a pixel-space path length).
            steps = (strip[1:] - strip[:-1]).abs().mean((1, 2, 3))
            out[f"{k}_step"], out[f"{k}_max"] = float(steps.mean()), float(steps.max())
            out[k] = _grid(strip, STRIP, GRID_SCALE)
        return out

    def _direction_grids(self, base, noise) -> dict:
        d = self._dirs
        steps = torch.tensor(DIRECTION_STEPS, device=base.device)[:, None, None]
        rows = [base + steps * d["pca.std"][k] * d["pca.directions"][k] for k in range(NUM_PCS)]
        pca = self._synth(torch.cat(rows), noise)
        rows = [base + steps * d[f"attr.{a}.std"] * d[f"attr.{a}.direction"] for a in ATTRIBUTE_DIRECTIONS]
        attr = self._synth(torch.cat(rows), noise)
        return {"pca": _grid(pca, len(DIRECTION_STEPS), GRID_SCALE), "attr": _grid(attr, len(DIRECTION_STEPS), GRID_SCALE)}

    def _projection_layers(self, image: torch.Tensor):
        target = _target(image)
        p = self._projection
        if p is None:
            pair = torch.cat([target, torch.full_like(target, 0.15)])
            caption = "target (the input image at 32x32) | press Project to find its latent"
            curve = {"loss": (np.zeros(1, np.float32), np.zeros(1, np.float32))}
        else:
            with torch.no_grad():
                recon = self._synth(p.ws, "on")
            pair = torch.cat([p.target, recon])
            caption = f"target | projection in {p.space}: loss {p.loss[0]:.4f} -> {p.loss[-1]:.4f} after {p.steps[-1]} steps"
            curve = {"loss": (np.asarray(p.steps, np.float32), np.asarray(p.loss, np.float32))}
        return (
            ImageLayer("Projection", _grid(pair, 2, SCALE // 2), levels=(0.0, 1.0), caption=caption),
            CurveLayer("Projection loss", curve, x_label="step", y_label="MSE + feature loss", log_y=False,
                       caption="pixel MSE plus the attribute classifier's feature distance"),
        )

    # -- jobs ----------------------------------------------------------------------------------
    def start(self, action: str, image: torch.Tensor, params: Mapping[str, Any], query: Query) -> Iterator[JobUpdate]:
        if action == "train":
            return self._train(dict(params))
        if action != "project":
            raise ValueError(f"{self.spec.name} has no action {action!r}")
        return self._project(image, dict(params))

    # -- Train action --------------------------------------------------------------------------
    def _train(self, params: dict) -> Iterator[JobUpdate]:
        """Steps the training script's Trainer (conditional, a fresh generator) on the CPU; yields
        the loss curves and a refreshing grid of 16 fixed seeds; Stop keeps what was learned."""
        from backends.training.stylegan import Config, Trainer

        total = int(params["train_steps"])
        yield JobUpdate(0.0, f"drawing {TRAIN_POOL} training faces", None)
        trainer = Trainer(Config(steps=total, pool=TRAIN_POOL, seed=int(params["seed"])), None, resume=False,
                          log=lambda msg: None)
        yield from training_job(
            trainer, total, PREVIEW_EVERY, lambda losses: f"D {losses['loss_d']:.3f}  G {losses['loss_g']:.3f}",
            preview=lambda seconds: self._train_preview(trainer, total, seconds),
            save=lambda seconds: self._save_trained(trainer, seconds),
            steps_done=lambda: trainer.step_i,
            saved=lambda: f"saved {trainer.step_i} steps to {trained_path()}; choose weights = trained")

    @staticmethod
    @torch.no_grad()
    def _train_preview(trainer, total: int, seconds: float) -> Result:
        hist = trainer.history
        steps = np.asarray([h["step"] for h in hist], np.float32)
        curves = {k: (steps, np.asarray([h[k] for h in hist], np.float32)) for k in ("loss_d", "loss_g")}
        samples = trainer.samples(16, seed=123)
        return Result((
            CurveLayer("Training loss", curves, x_label="step", y_label="logistic loss", log_y=False,
                       caption="discriminator and generator (non-saturating) losses; a GAN's losses need not fall"),
            ImageLayer("Training samples", _grid(samples, 8, GRID_SCALE), levels=(0.0, 1.0),
                       caption="the EMA generator on 16 fixed z (attributes from z), psi 1, refreshed while training"),
            MetricsLayer("Training", {"step": trainer.step_i, "of": total, "seconds": round(seconds, 1),
                                      **{k: round(float(np.mean([h[k] for h in hist[-50:] if k in h])), 3)
                                         for k in ("loss_d", "loss_g", "d_real", "d_fake")}}),
        ))

    def _save_trained(self, trainer, seconds: float) -> None:
        from backends.models.stylegan import save_directions
        from backends.models.weights import save_weights

        path = trained_path()
        entry = {"model": "stylegan (trained in the app)", "steps": trainer.step_i, "train_minutes": round(seconds / 60, 2),
                 "pool": trainer.cfg.pool, "conditional": trainer.cfg.conditional}
        save_weights(path, trainer.G_ema.state_dict(), entry)
        save_directions(load_generator(path), trained_directions_path(), n_pca=TRAIN_PCA_SAMPLES, n_attr=TRAIN_DIRECTION_SAMPLES)
        self._model_key = None  # reload on the next run
        self._memo.clear()
        self._w_cache.clear()

    # -- projection job ------------------------------------------------------------------------
    def _project(self, image: torch.Tensor, params: dict) -> Iterator[JobUpdate]:
        from backends.models.attribute_classifier import load_classifier

        G = self._model(image.device, params["weights"])
        clf = load_classifier(device=str(image.device))
        target = _target(image)
        steps, lr, space = int(params["project_steps"]), float(params["project_lr"]), params["project_space"]
        with torch.no_grad():
            t_feat = clf.features(target)
            # Start from the mean of w, or the best of a few seeds' w (cheap, avoids a bad basin).
            cands = torch.cat([G.w_avg[None], self._ws_many(list(range(64)))[:, 0]])
            errs = (self._synth(cands[:, None].expand(-1, NUM_WS, -1), "on") - target).pow(2).mean((1, 2, 3))
            start = cands[int(errs.argmin())]
        n_lat = NUM_WS if space == "w+" else 1
        lat = start[None, None].repeat(1, n_lat, 1).clone().requires_grad_(True)
        opt = _Adam([lat], lr=lr)
        proj = Projection(lat.detach().expand(1, NUM_WS, -1).clone(), target, space, [], [])
        self._projection = proj
        last = 0.0
        for step in range(1, steps + 1):
            with torch.enable_grad():
                ws = lat.expand(1, NUM_WS, -1)
                img = self._synth(ws, "on")
                loss = F.mse_loss(img, target) + 0.01 * (clf.features(img) - t_feat).pow(2).mean()
                (grad,) = torch.autograd.grad(loss, lat)
            opt.step([grad])
            proj.ws = lat.detach().expand(1, NUM_WS, -1).clone()
            proj.steps.append(step)
            proj.loss.append(loss.item())
            now = time.perf_counter()
            result = None
            if now - last >= RESULT_INTERVAL_S or step == steps:
                last = now
                result = Result(self._projection_layers(image))
            yield JobUpdate(step / steps, f"step {step}/{steps}: loss {proj.loss[-1]:.4f}", result)
        self._memo.clear()


class _Adam:
    """Adam with the paper's defaults, written out (constructing torch.optim.Adam imports
    torch._dynamo, a second-long stall on the first press)."""

    def __init__(self, params, lr: float, betas=(0.9, 0.999), eps: float = 1e-8) -> None:
        self.params, self.lr, self.b1, self.b2, self.eps = params, lr, betas[0], betas[1], eps
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.t = 0

    @torch.no_grad()
    def step(self, grads) -> None:
        self.t += 1
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            m.mul_(self.b1).add_(g, alpha=1 - self.b1)
            v.mul_(self.b2).addcmul_(g, g, value=1 - self.b2)
            mh = m / (1 - self.b1 ** self.t)
            vh = v / (1 - self.b2 ** self.t)
            p.sub_(self.lr * mh / (vh.sqrt() + self.eps))


def _target(image: torch.Tensor) -> torch.Tensor:
    """The input image as a 32x32 target (area average), (1, 3, 32, 32)."""
    return F.adaptive_avg_pool2d(image[:, :3].float(), 32).clamp(0, 1)


def _slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    an, bn = a / a.norm(), b / b.norm()
    omega = torch.arccos((an * bn).sum().clamp(-1 + 1e-7, 1 - 1e-7))
    so = torch.sin(omega)
    return (torch.sin((1 - t) * omega) / so) * a + (torch.sin(t * omega) / so) * b


def _upscale(img: torch.Tensor, scale: int) -> torch.Tensor:
    """(3, H, W) -> (H * scale, W * scale, 3), nearest neighbour."""
    return img.repeat_interleave(scale, 1).repeat_interleave(scale, 2).permute(1, 2, 0)


def _grid(images: torch.Tensor, ncol: int, scale: int, frame: Optional[int] = None, gap: int = 1) -> torch.Tensor:
    """(N, 3, h, w) -> one (H, W, 3) image of ``ncol`` columns, upscaled by ``scale`` (nearest),
    ``gap`` dark pixels (before upscaling) between tiles; tile ``frame`` gets a yellow border."""
    n, c, h, w = images.shape
    rows = -(-n // ncol)
    canvas = torch.full((c, rows * (h + gap) - gap, ncol * (w + gap) - gap), 0.08, device=images.device)
    for i in range(n):
        r, col = divmod(i, ncol)
        canvas[:, r * (h + gap): r * (h + gap) + h, col * (w + gap): col * (w + gap) + w] = images[i]
    out = _upscale(canvas, scale).clone()
    if frame is not None and 0 <= frame < n:
        r, col = divmod(frame, ncol)
        y0, x0 = r * (h + gap) * scale, col * (w + gap) * scale
        yellow = torch.tensor([1.0, 0.85, 0.1], device=out.device)
        t = max(1, scale // 2)
        out[y0: y0 + h * scale, x0: x0 + t] = yellow
        out[y0: y0 + h * scale, x0 + w * scale - t: x0 + w * scale] = yellow
        out[y0: y0 + t, x0: x0 + w * scale] = yellow
        out[y0 + h * scale - t: y0 + h * scale, x0: x0 + w * scale] = yellow
    return out
