"""StyleGAN-style generator on cartoon faces: seeds, truncation, noise, style mixing, GANSpace and
InterFaceGAN directions, z-versus-w interpolation, and projection of the input image into w / w+.

Everything runs on the shipped 32x32 EMA generator (assets/weights/stylegan_faces.safetensors) and
its precomputed directions, or (``weights = trained``) on the generator the Train action last saved
in the user's data folder, with directions fitted for it when it was saved. Panels are memoized on
their own inputs: the latent-edit sliders (psi, mixing, noise, directions) only redraw the edited
face, the mixing strip and the classifier read-out; the overview grids follow the seeds. Images are
shown upscaled with nearest neighbour. The model and panel builders are in ``_stylegan_panels``;
projection is ``backends.models.stylegan_projection``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

import torch

import backends.ops._stylegan_panels as panels
from backends.layers import BarsLayer, ImageLayer, MetricsLayer, Result
from backends.models.stylegan import (
    ATTRIBUTE_DIRECTIONS,
    DIRECTIONS_PATH,
    LAYER_GROUPS,
    LAYER_NAMES,
    NOISE_LAYERS,
    NUM_WS,
    WEIGHTS_PATH,
    load_generator,
    mix_styles,
    parameter_count,
    save_directions,
)
from backends.models.stylegan_projection import Projection, project, projection_target
from backends.models.weights import data_dir, save_weights
from backends.ops._stylegan_panels import (
    BROWSER_SIDE,
    DIRECTION_STEPS,
    NUM_PCS,
    TRUNCATION_STRIP,
    StyleModel,
)
from backends.params import BoolParam, ChoiceParam, FloatParam, IntParam, ParamError, SeedParam
from backends.registry import Action, JobUpdate, Operator, OperatorSpec, Query, register
from backends.timing import StageTimer
from backends.training.loop import training_job

NOISE_MODES = ("on", "off", "per-layer")
EDIT_LAYERS = ("all", "coarse", "middle", "fine")
SOURCES = ("seed", "projection")
PROJECTION_PREVIEW_EVERY = 5  # Project: steps between refreshes of the projection panels
PREVIEW_EVERY = 25  # Train: steps between sample-grid refreshes
TRAIN_POOL = 5000  # Train: data faces drawn once at the start (the script uses 40,000)
TRAIN_DIRECTION_SAMPLES = 1000  # Train: samples labelled to fit the attribute directions on save
TRAIN_PCA_SAMPLES = 5000
SEED_LATENT = ("weights", "source", "seed")  # what the edited latent (before the sliders) reads


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
    *(FloatParam(f"noise_{i + 1}", 1.0, 0.0, 10.0, step=0.1, help=f"Noise gain at layer {LAYER_NAMES[i]} (per-layer mode).",
                 enabled_when=(("noise", ("per-layer",)),))
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
        primary="Generated",
        tabs=(("sample", ("Attributes read by the classifier", "Mean face (w_avg)", "Metrics")),
              ("latent space", ("Seed browser", "Truncation", "Interpolation: z vs w")),
              ("edits", ("Principal directions (GANSpace)", "Attribute directions (InterFaceGAN)", "Style mixing")),
              ("projection", ("Projection", "Projection loss"))),  # a Train job's panels join as a group of their own
    )
    memo_capacity = 24

    def __init__(self) -> None:
        super().__init__()
        self._model: Optional[StyleModel] = None
        self._projection: Optional[Projection] = None
        self._projections = 0  # fits started: names the current one in memo keys

    def reset_state(self) -> None:
        super().reset_state()
        self._model = None
        self._projection = None

    def _loaded(self, device: torch.device, weights: str) -> StyleModel:
        """The generator of ``weights``; a different file version or device forgets every panel."""
        path, dirs_path = model_paths(weights)
        if self._model is None or self._model.key != (str(path), path.stat().st_mtime_ns, str(device)):
            self._model = StyleModel.load(path, dirs_path, device)
            self.memo.clear()
        return self._model

    def _base_ws(self, m: StyleModel, params: Mapping[str, Any]) -> tuple[torch.Tensor, str]:
        """The untruncated latent being edited: the seed's, or the last projection's."""
        fit = self._projection
        if params["source"] == "projection":
            if fit is None:
                return m.ws([params["seed"]]), "no projection yet: press Project; showing the seed"
            return fit.ws, f"projection ({fit.space}, {fit.steps[-1]} steps)"
        return m.ws([params["seed"]]), f"seed {params['seed']}"

    # -- run -----------------------------------------------------------------------------------
    def run(self, image: torch.Tensor, params: Mapping[str, Any], query: Query) -> Result:
        timer = StageTimer()
        m = self._loaded(image.device, params["weights"])
        psi, seed, mix_seed = float(params["psi"]), int(params["seed"]), int(params["mix_seed"])
        overview = "off" if params["noise"] == "off" else "on"
        fit = (self._projections, len(self._projection.steps) if self._projection else 0)
        latent = (overview, fit if params["source"] == "projection" else None)

        with timer("edited face"):  # base latent, truncation, mixing, direction offsets, noise
            base, base_text = self._base_ws(m, params)
            ws_b = m.truncate(m.ws([mix_seed]), psi)
            ws = m.truncate(base, psi)
            mixed_layers = [i for i in range(NUM_WS) if params[f"mix_{i}"]]
            if mixed_layers:
                ws = mix_styles(ws, ws_b, mixed_layers)
            ws = ws + m.edit_delta(params)
            gains = [float(params[f"noise_{i + 1}"]) for i in range(NOISE_LAYERS)] if params["noise"] == "per-layer" else None
            face = m.synth(ws, params["noise"], gains)
        with timer("classifier"):
            readout = panels.readout(face)
        with timer("mixing"):
            mean_face = self.memo.stage("mean", params, ("weights",), lambda: panels.mean_face(m, overview), extra=overview)
            mixing = self.memo.stage("mixing", params, SEED_LATENT + ("mix_seed", "psi"),
                                     lambda: panels.mixing_strip(m, base, ws_b, psi, overview), extra=latent)
        with timer("overview grids"):
            browser = self.memo.stage("browser", params, ("weights", "seed"), lambda: panels.seed_browser(m, seed, overview),
                                      extra=overview)
            truncation = self.memo.stage("truncation", params, SEED_LATENT, lambda: panels.truncation_strip(m, base, overview),
                                         extra=latent)
            interp = self.memo.stage("interpolation", params, ("weights", "seed", "mix_seed"),
                                     lambda: panels.interpolations(m, seed, mix_seed, overview), extra=overview)
            dirs = self.memo.stage("directions", params, SEED_LATENT, lambda: panels.direction_grids(m, base, overview),
                                   extra=latent)
            projection = self.memo.stage("projection", params, ("weights",),
                                         lambda: panels.projection_layers(m, image, self._projection),
                                         extra=(self.image_key, fit))

        first = panels.browser_first(seed)
        mix_text = ", ".join(LAYER_NAMES[i] for i in mixed_layers) or "none"
        steps = tuple(panels.signed(v) for v in DIRECTION_STEPS)
        layers = [
            ImageLayer("Generated", panels.face_image(face[0]), levels=(0.0, 1.0),
                       caption=f"{params['weights']} generator, {base_text}{panels.conditioning_text(m.G, params)}, "
                               f"psi {psi:g}, noise {params['noise']}, layers from seed {mix_seed}: {mix_text}"),
            ImageLayer("Mean face (w_avg)", mean_face, levels=(0.0, 1.0),
                       caption="the generator's running mean of w, decoded: every seed at psi = 0"),
            ImageLayer("Seed browser", browser, levels=(0.0, 1.0),
                       row_labels=tuple(str(first + r * BROWSER_SIDE) for r in range(BROWSER_SIDE)),
                       column_labels=tuple(f"+{c}" for c in range(BROWSER_SIDE)), axis_titles=("", "seed"),
                       caption=f"seeds {first}..{first + BROWSER_SIDE ** 2 - 1} at psi 1, seed = row + column "
                               f"(seed {seed} framed)"),
            ImageLayer("Style mixing", mixing, levels=(0.0, 1.0),
                       column_labels=("A", "B", "coarse", "middle", "fine"), axis_titles=("A with B's styles at", ""),
                       caption=f"A = {base_text}, B = seed {mix_seed}, psi {psi:g}; then A with B's coarse (4-8 px), "
                               f"middle (16 px) or fine (32 px) styles; the mix_* boxes pick layers for Generated"),
            ImageLayer("Truncation", truncation, levels=(0.0, 1.0),
                       column_labels=tuple(f"{p:g}" for p in TRUNCATION_STRIP), axis_titles=("psi", ""),
                       caption=f"{base_text} at each psi: w = w_avg + psi (w - w_avg)"),
            ImageLayer("Interpolation: z vs w", interp["grid"], levels=(0.0, 1.0),
                       row_labels=("slerp in z", "lerp in w"), column_labels=tuple(str(i) for i in range(panels.STRIP)),
                       axis_titles=("step", ""),
                       caption=f"from seed {seed} (step 0) to seed {mix_seed} (step {panels.STRIP - 1}); mean pixel change per step: z {interp['z_step']:.3f} (largest {interp['z_max']:.3f}), "
                               f"w {interp['w_step']:.3f} (largest {interp['w_max']:.3f}): the more even path changes more evenly"),
            ImageLayer("Principal directions (GANSpace)", dirs["pca"], levels=(0.0, 1.0),
                       row_labels=tuple(f"PC {k + 1}" for k in range(NUM_PCS)), column_labels=steps,
                       axis_titles=("std along the direction", ""),
                       caption=f"{base_text} moved along each principal direction of w; all layers, psi 1"),
            ImageLayer("Attribute directions (InterFaceGAN)", dirs["attr"], levels=(0.0, 1.0),
                       row_labels=ATTRIBUTE_DIRECTIONS, column_labels=steps, axis_titles=("std along the direction", ""),
                       caption=f"{base_text} moved along the normals of the classifier's attribute boundaries in w; "
                               "all layers, psi 1"),
            *projection,
            BarsLayer("Attributes read by the classifier", readout[0], {"edited face": readout[1]}, y_range=(-1.0, 1.0),
                      value_label="classifier output", caption=readout[2]),
            MetricsLayer("Metrics", {
                "generator parameters": parameter_count(m.G),
                "distance of w from w_avg": round(float((ws - m.G.w_avg).norm(dim=-1).mean()), 3),
                **{f"cos(PC1, {a})": round(float(m.dirs["pca.directions"][0] @ m.dirs[f"attr.{a}.direction"]), 3)
                   for a in ATTRIBUTE_DIRECTIONS},
                "cos(smile, tilt)": m.cosine("attr.smile.direction", "attr.tilt.direction"),
                **timer.metrics(),
                "total ms": round(timer.total_ms, 2),
            }),
        ]
        return Result(tuple(layers))

    # -- jobs ----------------------------------------------------------------------------------
    def job_project(self, image: torch.Tensor, params: Mapping[str, Any], query: Query) -> Iterator[JobUpdate]:
        """Fits the input image's latent; the fit becomes ``source = projection`` as it goes."""
        m = self._loaded(image.device, params["weights"])
        steps = int(params["project_steps"])
        self._projections += 1
        for fit in project(m.G, projection_target(image), params["project_space"], steps, float(params["project_lr"])):
            self._projection = fit
            step = fit.steps[-1]
            show = step % PROJECTION_PREVIEW_EVERY == 1 or step == steps
            result = Result(panels.projection_layers(m, image, fit)) if show else None
            yield JobUpdate(step / steps, f"step {step}/{steps}: loss {fit.loss[-1]:.4f}", result)

    def job_train(self, image: torch.Tensor, params: Mapping[str, Any], query: Query) -> Iterator[JobUpdate]:
        """Steps the training script's Trainer (conditional, a fresh generator) on the CPU; yields
        the loss curves and a refreshing grid of 16 fixed seeds; Stop keeps what was learned."""
        from backends.training.stylegan import Config, Trainer

        total = int(params["train_steps"])
        yield JobUpdate(0.0, f"drawing {TRAIN_POOL} training faces", None)
        trainer = Trainer(Config(steps=total, pool=TRAIN_POOL, seed=int(params["seed"])), None, resume=False,
                          log=lambda msg: None)
        yield from training_job(
            trainer, total, PREVIEW_EVERY, lambda losses: f"D {losses['loss_d']:.3f}  G {losses['loss_g']:.3f}",
            preview=lambda seconds: panels.train_preview(trainer, total, seconds),
            save=lambda seconds: self._save_trained(trainer, seconds),
            steps_done=lambda: trainer.step_i,
            saved=lambda: f"saved {trainer.step_i} steps to {trained_path()}; choose weights = trained")

    def _save_trained(self, trainer, seconds: float) -> None:
        path = trained_path()
        entry = {"model": "stylegan (trained in the app)", "steps": trainer.step_i, "train_minutes": round(seconds / 60, 2),
                 "pool": trainer.cfg.pool, "conditional": trainer.cfg.conditional}
        save_weights(path, trainer.G_ema.state_dict(), entry)
        save_directions(load_generator(path), trained_directions_path(), n_pca=TRAIN_PCA_SAMPLES, n_attr=TRAIN_DIRECTION_SAMPLES)
        self._model = None  # reload on the next run
