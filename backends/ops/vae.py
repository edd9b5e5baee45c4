"""VAE latent explorer: traversals, sliders, a 2-D latent plane, the posterior as bars, the
reparameterization trick made visible, encode-then-edit and interpolation, plus a Train action.

The shipped models are VAEs with 10 latent dimensions: two on procedural sprites
(``backends.data.sprites``) with KL weight beta = 1 and 4, one on cartoon faces
(``backends.data.faces``); ``weights = trained`` loads the one the Train action last saved, for the
chosen model's dataset, in the user's data folder. ``source`` says where the latent comes from; the sliders z0..z9 set the
latent directly (``sliders``) or are added to it as an edit (every other source).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch

from backends.data import sampler
from backends.imaging import center_square, hwc, image_grid
from backends.layers import BarsLayer, CurveLayer, ImageLayer, MetricsLayer, PointSet, PointsLayer, Result
from backends.models.vae import SIZE, VAE, inference_vae, kl_per_dim, reparameterize, shipped_path
from backends.models.weights import data_dir, read_manifest
from backends.params import ChoiceParam, FloatParam, IntParam, ParamError, SeedParam
from backends.registry import Action, JobUpdate, Operator, OperatorSpec, Query, register
from backends.timing import StageTimer
from backends.training.loop import training_job

LATENT_DIM = 10
SOURCES = ("dataset sample", "encode input", "prior sample", "sliders")
MODELS = ("sprites_beta4", "sprites_beta1", "faces")  # shipped as assets/weights/vae_<model>.safetensors
TRAVERSAL_STEPS = 9
PLANE_STEPS = 7
INTERP_STEPS = 9
POSTERIOR_SAMPLES = 8
RANGE = 3.0
PREVIEW_EVERY = 25
HELD_OUT_SEED = 987_654_321


def dataset_of(model: str) -> str:
    return model.split("_")[0]


def trained_path(dataset: str) -> Path:
    return data_dir() / f"vae_{dataset}_trained.safetensors"


def model_path(weights: str, model: str) -> Path:
    path = shipped_path(model) if weights == "shipped" else trained_path(dataset_of(model))
    if not path.is_file():
        if weights == "trained":
            raise ParamError("no trained VAE yet: press 'Start Train a VAE' first, or choose weights = shipped")
        raise ParamError(f"the shipped VAE {path.name} is missing from assets/weights/")
    return path


def grid(images: torch.Tensor, columns: int) -> torch.Tensor:
    """(N, 3, 32, 32) -> one (H, W, 3) image, ``columns`` tiles a row, a pixel between tiles."""
    return hwc(image_grid(images, columns))


@register
class VAEExplorer(Operator):
    spec = OperatorSpec(
        name="vae",
        title="VAE latent explorer",
        family="Generative",
        description=(
            "A VAE trained on procedural sprites (shape, scale, rotation, position, hue) or cartoon faces. Move the "
            "sliders to walk the 10-D latent; the traversal shows what each dimension does, the plane "
            "decodes two dimensions at once, the bars show the encoder's mean and spread and how "
            "z = mu + sigma * eps is drawn. Larger beta trades sharpness for dimensions that each "
            "follow one true factor (scored by MIG)."
        ),
        params=(
            ChoiceParam("weights", "shipped", ("shipped", "trained"), help="Shipped weights, or the VAE the Train action saved."),
            ChoiceParam("model", "sprites_beta4", MODELS,
                        help="Sprites with KL weight beta = 4 (disentangled, blurrier) or 1 (plain VAE), or cartoon faces."),
            ChoiceParam("source", "dataset sample", SOURCES,
                        help="Where the latent comes from: a seeded dataset image's encoding, the input image's encoding, "
                             "a sample from the prior N(0, I), or the sliders alone. Except for 'sliders', the "
                             "sliders are added to it as an edit."),
            SeedParam("seed", 0, help="Seed of the dataset image, the prior sample and the reparameterization noise eps."),
            *(FloatParam(f"z{i}", 0.0, -RANGE, RANGE, step=0.05, help=f"Latent dimension {i}: value (sliders) or edit offset.")
              for i in range(LATENT_DIM)),
            IntParam("plane_x", 0, 0, LATENT_DIM - 1, help="Latent dimension along the plane's x axis."),
            IntParam("plane_y", 1, 0, LATENT_DIM - 1, help="Latent dimension along the plane's y axis."),
            FloatParam("train_beta", 4.0, 0.0, 16.0, step=0.5, help="KL weight for the Train action."),
            IntParam("train_steps", 3000, 50, 50000, step=50, help="Optimizer steps for the Train action."),
        ),
        uses_query=False,
        actions=(Action("train", "Train a VAE", "Train a fresh VAE on the chosen model's dataset on the worker; saved "
                        "to your data folder and selectable with weights = trained."),),
    )

    memo_capacity = 24

    # -- run -----------------------------------------------------------------------------------
    def run(self, image: torch.Tensor, params: Mapping[str, Any], query: Query) -> Result:
        timer = StageTimer()
        path = model_path(params["weights"], params["model"])
        device = image.device
        model = inference_vae(path, device)
        dataset = dataset_of(params["model"])
        version = path.stat().st_mtime_ns  # a retrained file is another model
        source, seed = params["source"], int(params["seed"])
        d = model.latent_dim
        sliders = torch.tensor([float(params.get(f"z{i}", 0.0)) for i in range(d)], device=device)
        model_inputs = ("weights", "model", "seed")  # what the encoded image and its panels read

        with timer("encode"):
            encoded = source == "encode input"  # the other sources share the dataset sample's encoding
            enc = self.memo.stage("encode", params, model_inputs, lambda: self._encode(model, image, source, dataset, seed),
                                  extra=(encoded, version))
            x_enc, mu, logvar = enc["x"], enc["mu"], enc["logvar"]
            if source in ("dataset sample", "encode input"):
                base = mu[0]
            elif source == "prior sample":
                base = torch.randn(d, generator=torch.Generator().manual_seed(seed)).to(device)
            else:
                base = torch.zeros(d, device=device)
            z = sliders if source == "sliders" else base + sliders
        with timer("decode"):
            decoded = model.decode(z[None])[0]
        with timer("traversal"):
            # Around the source's latent, not the edited z: an edit then costs 1 + 49 decodes, not 140.
            traversal = self.memo.stage("traversal", params, model_inputs + ("source",),
                                        lambda: self._traversal(model, base), extra=version)
        with timer("plane"):
            plane_layer = self._plane(model, z, int(params["plane_x"]), int(params["plane_y"]))
        with timer("posterior panels"):
            static = self.memo.stage("posterior", params, model_inputs,
                                     lambda: self._static_layers(model, x_enc, mu, logvar, dataset, seed), extra=(encoded, version))

        entry = self.memo.stage("manifest", params, ("weights", "model"),
                                lambda: read_manifest(path.parent).get(path.name, {}), extra=version)
        mig = entry.get("metric", {}).get("value")
        kl = kl_per_dim(mu, logvar)[0]
        layers = (
            ImageLayer("Decoded", hwc(decoded), levels=(0.0, 1.0),
                       caption=f"decode(z), z = {_fmt(z)}"),
            ImageLayer("Traversal", traversal, levels=(0.0, 1.0),
                       caption=f"row k sweeps z_k from -3 to +3 (left to right), the other dimensions held at the source latent ({source}, before slider edits)"),
            plane_layer,
            *static,
            MetricsLayer("Metrics", {
                "model": path.name,
                "KL weight beta": entry.get("beta", "?"),
                "score": round(mig, 3) if mig is not None else "n/a",

                "active dims (KL > 0.1)": int((kl > 0.1).sum()),
                "KL of this encoding": round(float(kl.sum()), 2),
                **timer.metrics(),
                "run ms": round(timer.total_ms, 2),
            }, caption=f"score: {entry.get('metric', {}).get('name', 'none recorded')}"),
        )
        return Result(layers)

    def _encode(self, model: VAE, image: torch.Tensor, source: str, dataset: str, seed: int) -> dict[str, torch.Tensor]:
        if source == "encode input":
            x = center_square(image[:, :3], SIZE)
        else:
            x, _ = sampler(dataset)(1, seed)
            x = x.to(image.device)
        mu, logvar = model.encode(x)
        return {"x": x, "mu": mu, "logvar": logvar}

    def _traversal(self, model: VAE, z: torch.Tensor) -> np.ndarray:
        d = z.shape[0]
        values = torch.linspace(-RANGE, RANGE, TRAVERSAL_STEPS, device=z.device)
        zs = z.repeat(d, TRAVERSAL_STEPS, 1)  # (d, steps, d)
        idx = torch.arange(d, device=z.device)
        zs[idx, :, idx] = values[None, :]
        return grid(model.decode(zs.view(-1, d)), TRAVERSAL_STEPS)

    def _plane(self, model: VAE, z: torch.Tensor, px: int, py: int) -> PointsLayer:
        d = z.shape[0]
        values = torch.linspace(-RANGE, RANGE, PLANE_STEPS, device=z.device)
        zs = z.repeat(PLANE_STEPS, PLANE_STEPS, 1)
        zs[:, :, py] = values.flip(0)[:, None]  # up is positive
        zs[:, :, px] = values[None, :]
        tiles = grid(model.decode(zs.view(-1, d)), PLANE_STEPS)
        cell = 33.0
        span = (PLANE_STEPS - 1) / (2 * RANGE)
        mx = (float(z[px].clamp(-RANGE, RANGE)) * span + (PLANE_STEPS - 1) / 2) * cell + 15.5  # pixel-index convention: the centre of a 32 px tile
        my = ((PLANE_STEPS - 1) / 2 - float(z[py].clamp(-RANGE, RANGE)) * span) * cell + 15.5  # pixel-index convention: the centre of a 32 px tile
        same = " (the same dimension on both axes)" if px == py else ""
        return PointsLayer(
            "Latent plane",
            sets=(PointSet(np.array([[mx, my]], np.float32), color=(255, 80, 80), size=12.0, label="current z"),),
            background=tiles,
            caption=f"z{px} left to right, z{py} bottom to top, -3..+3; other dimensions as in z{same}",
        )

    def _static_layers(self, model: VAE, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, dataset: str,
                       seed: int) -> tuple:
        """Panels that depend only on the encoded image and seed, not on the sliders."""
        d = mu.shape[1]
        labels = tuple(f"z{i}" for i in range(d))
        sigma = torch.exp(0.5 * logvar)
        gen = torch.Generator().manual_seed(seed + 1)
        eps = torch.randn((POSTERIOR_SAMPLES, d), generator=gen).to(mu.device)
        zs = reparameterize(mu, logvar, eps)
        recon = model.decode(mu)
        other, _ = sampler(dataset)(1, seed + 1)
        mu_b, _ = model.encode(other.to(mu.device))
        t = torch.linspace(0.0, 1.0, INTERP_STEPS, device=mu.device)[:, None]
        interp = model.decode((1 - t) * mu + t * mu_b)
        kl = kl_per_dim(mu, logvar)[0]
        return (
            ImageLayer("Encoded image", grid(torch.cat([x, recon]), 2), levels=(0.0, 1.0),
                       caption=f"left: the 32x32 image encoded (the input's central square for 'encode input', else "
                               f"{dataset} sample {seed}); right: decode(mu), its reconstruction"),
            BarsLayer("Posterior mu, sigma", labels, {"mu": mu[0], "sigma": sigma[0], "KL": kl},
                      caption="q(z|x) = N(mu, sigma^2) per dimension; KL to N(0, 1) shows which dimensions carry information"),
            BarsLayer("Reparameterization", labels,
                      {"mu": mu[0], "sigma * eps": (sigma * eps[:1])[0], "z = mu + sigma * eps": zs[0]},
                      caption=f"eps ~ N(0, I) (seed {seed + 1}) is an input; z is a differentiable function of mu and sigma"),
            ImageLayer("Posterior samples", grid(model.decode(zs), POSTERIOR_SAMPLES), levels=(0.0, 1.0),
                       caption=f"decode(mu + sigma * eps) for {POSTERIOR_SAMPLES} draws of eps: the spread of q(z|x)"),
            ImageLayer("Interpolation", grid(interp, INTERP_STEPS), levels=(0.0, 1.0),
                       caption=f"linear path from this encoding (left) to the encoding of {dataset} sample {seed + 1} (right)"),
        )

    # -- Train action ------------------------------------------------------------------------
    def job_train(self, image: torch.Tensor, params: Mapping[str, Any], query: Query) -> Iterator[JobUpdate]:
        """Trains a fresh VAE on the chosen model's dataset with previews; Stop keeps what it learned."""
        from backends.training.vae import Trainer

        total = int(params["train_steps"])
        beta = float(params["train_beta"])
        seed = int(params["seed"])
        dataset = dataset_of(params["model"])
        trainer = Trainer(dataset, beta=beta, seed=seed, warmup=min(500, max(1, total // 5)), device=image.device)
        fixed = torch.randn((16, trainer.model.latent_dim), generator=torch.Generator().manual_seed(seed)).to(image.device)
        held, _ = sampler(dataset)(8, HELD_OUT_SEED)
        held = held.to(image.device)
        yield from training_job(
            trainer, total, PREVIEW_EVERY, lambda losses: f"loss {losses['loss']:.1f}",
            preview=lambda seconds: self._train_preview(trainer, fixed, held, seconds, total),
            save=lambda seconds: self._save_trained(trainer, seconds),
            steps_done=lambda: trainer.steps_done,
            saved=lambda: f"saved {trainer.steps_done} steps to {trained_path(dataset)}; choose weights = trained")

    @staticmethod
    @torch.no_grad()
    def _train_preview(trainer, fixed: torch.Tensor, held: torch.Tensor, seconds: float, total: int) -> Result:
        model = trainer.model
        steps = np.arange(1, trainer.steps_done + 1, dtype=np.float32)
        hist = {k: np.asarray(v, np.float32) for k, v in trainer.history.items()}
        recon = model.decode(model.encode(held)[0])
        return Result((
            CurveLayer("Training loss", {"loss": (steps, hist["loss"]), "reconstruction": (steps, hist["recon"]),
                                         "KL x 10": (steps, hist["kl"] * 10)},
                       x_label="step", y_label="nats per image", log_y=True),
            ImageLayer("Training samples", grid(model.decode(fixed), 8), levels=(0.0, 1.0),
                       caption="decode(z) for 16 fixed z ~ N(0, I), refreshed while training"),
            ImageLayer("Training reconstructions", grid(torch.cat([held, recon]), 8), levels=(0.0, 1.0),
                       caption=f"top: held-out {trainer.dataset}; bottom: their reconstructions"),
            MetricsLayer("Training", {"step": trainer.steps_done, "of": total, "beta": trainer.beta,
                                      "KL weight now": round(trainer.current_beta(), 3),
                                      **{k: round(v, 3) for k, v in trainer.recent(50).items()},
                                      "seconds": round(seconds, 1)}),
        ))

    @staticmethod
    def _save_trained(trainer, seconds: float) -> None:
        from backends.models.vae import config_dict
        from backends.models.weights import save_weights
        from backends.training.vae import evaluate, sprites_mig

        entry = trainer.manifest_entry(seconds, torch.get_num_threads())
        entry.update({k: round(v, 5) for k, v in evaluate(trainer.model, trainer.dataset, n=256).items()})
        if trainer.dataset == "sprites":
            mig = sprites_mig(trainer.model, n=2000)
            entry["metric"] = {"name": "MIG (sprites, 2000 held-out)", "value": round(mig["mig"], 4)}
        save_weights(trained_path(trainer.dataset), trainer.model.state_dict(), entry, metadata=config_dict(trainer.model))


def _fmt(z: torch.Tensor) -> str:
    return "[" + ", ".join(f"{float(v):+.1f}" for v in z) + "]"
