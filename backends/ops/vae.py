"""VAE latent explorer: traversals, sliders, a 2-D latent plane, the posterior as bars, the
reparameterization trick made visible, encode-then-edit, interpolation and prior samples, plus a
Train action.

The shipped models are VAEs on procedural sprites (``backends.data.sprites``) with KL weight
beta = 1 and 4, 10 latent dimensions each, and one on cartoon faces (``backends.data.faces``) with
16; ``weights = trained`` loads the one the Train action last saved, for the chosen model's dataset,
in the user's data folder. ``source`` says where the latent comes from; the sliders z0..z15 set the
latent directly (``sliders``) or are added to it as an edit (every other source); those beyond the
chosen model's size are greyed out. The panels are built in ``_vae_panels``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Mapping

import torch

import backends.ops._vae_panels as panels
from backends.data import sampler
from backends.imaging import center_square
from backends.layers import ImageLayer, MetricsLayer, Result
from backends.models.vae import SIZE, VAE, inference_vae, kl_per_dim, shipped_path
from backends.models.weights import data_dir, read_entry
from backends.params import ChoiceParam, FloatParam, IntParam, ParamError, SeedParam
from backends.registry import Action, JobUpdate, Operator, OperatorSpec, Query, register
from backends.timing import StageTimer
from backends.training.loop import training_job

SOURCES = ("dataset sample", "encode input", "prior sample", "sliders")
# shipped as assets/weights/vae_<model>.safetensors, with their latent sizes (the Train action keeps them)
LATENT_DIMS = {"sprites_beta4": 10, "sprites_beta1": 10, "faces": 16}
MODELS = tuple(LATENT_DIMS)
MAX_LATENT = max(LATENT_DIMS.values())
RANGE = panels.RANGE
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


def _models_with(i: int) -> tuple[str, ...]:
    """The models that have latent dimension ``i``."""
    return tuple(m for m, d in LATENT_DIMS.items() if d > i)


def _slider(i: int) -> FloatParam:
    models = _models_with(i)
    only = "" if len(models) == len(MODELS) else f" ({', '.join(models)} only: {LATENT_DIMS[models[0]]}-D)"
    return FloatParam(f"z{i}", 0.0, -RANGE, RANGE, step=0.05,
                      help=f"Latent dimension {i}: its value when source = sliders, else an offset added to the source's "
                           f"latent{only}.",
                      enabled_when=() if len(models) == len(MODELS) else (("model", models),))


@register
class VAEExplorer(Operator):
    spec = OperatorSpec(
        name="vae",
        title="VAE latent explorer",
        family="Generative",
        description=(
            "A VAE trained on procedural sprites (shape, scale, rotation, position, hue) or cartoon faces. The sprites "
            "models have 10 latent dimensions (z0..z9), the faces model 16 (z0..z15). Move the sliders to walk the "
            "latent; the traversal shows what each dimension does, the plane decodes two dimensions at once, the "
            "bars show the encoder's mean and spread, the information each dimension carries, and how "
            "z = mu + sigma * eps is drawn. Larger beta trades sharpness for dimensions that each "
            "follow one true factor (scored by MIG)."
        ),
        params=(
            ChoiceParam("weights", "shipped", ("shipped", "trained"), help="Shipped weights, or the VAE the Train action saved."),
            ChoiceParam("model", "sprites_beta4", MODELS,
                        help="Sprites with KL weight beta = 4 (disentangled, blurrier) or 1 (plain VAE), 10-D; "
                             "or cartoon faces, 16-D."),
            ChoiceParam("source", "dataset sample", SOURCES,
                        help="Where the latent comes from: a seeded dataset image's encoding, the input image's encoding, "
                             "a sample from the prior N(0, I), or the sliders alone. Except for 'sliders', the "
                             "sliders are added to it as an edit."),
            SeedParam("seed", 0, help="Seed of the dataset image, the prior samples and the reparameterization noise eps."),
            *(_slider(i) for i in range(MAX_LATENT)),
            IntParam("plane_x", 0, 0, MAX_LATENT - 1, help="Latent dimension along the plane's x axis (0..9 for the "
                     "sprites models, 0..15 for faces)."),
            IntParam("plane_y", 1, 0, MAX_LATENT - 1, help="Latent dimension along the plane's y axis (0..9 for the "
                     "sprites models, 0..15 for faces)."),
            FloatParam("train_beta", 4.0, 0.0, 16.0, step=0.5, help="KL weight for the Train action."),
            IntParam("train_steps", 3000, 50, 50000, step=50, help="Optimizer steps for the Train action."),
        ),
        uses_query=False,
        actions=(Action("train", "Train a VAE", "Train a fresh VAE on the chosen model's dataset on the worker; saved "
                        "to your data folder and selectable with weights = trained."),),
        primary="Decoded",
        tabs=(
            ("reconstruction", ("Encoded image", "Posterior samples")),
            ("latent space", ("Traversal", "Latent plane", "Interpolation")),
            ("posterior", ("Posterior mu, sigma", "KL per dimension", "Reparameterization", "Metrics")),
            ("samples", ("Prior samples",)),
        ),  # a Train job's panels join as a group of their own
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
        px, py = int(params["plane_x"]), int(params["plane_y"])
        for name, k in (("plane_x", px), ("plane_y", py)):
            if k >= d:
                raise ParamError(f"{name}: z{k} is beyond this {d}-D model ({params['model']}: z0..z{d - 1}); "
                                 f"choose 0..{d - 1}" + (" or model = faces" if k < MAX_LATENT else ""))
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
        kl = kl_per_dim(mu, logvar)[0]
        with timer("traversal"):
            # Around the source's latent, not the edited z: an edit then costs 1 + 49 decodes, not 1 + 49 + 7 d.
            traversal = self.memo.stage("traversal", params, model_inputs + ("source",),
                                        lambda: panels.traversal(model, base), extra=version)
        with timer("plane"):
            rest = z.clone()
            rest[[px, py]] = 0.0  # what the plane's tiles read: z without its two axes
            tiles = self.memo.stage("plane", params, ("weights", "model", "plane_x", "plane_y"),
                                    lambda: panels.plane_tiles(model, z, px, py), extra=(tuple(rest.tolist()), version))
            plane_layer = panels.plane(tiles, z, px, py)
        encoded_text = "the input's central square" if encoded else f"{dataset} sample {seed}"
        with timer("posterior panels"):
            static = self.memo.stage("posterior", params, model_inputs, extra=(encoded, version), compute=lambda: (
                panels.posterior_layers(model, x_enc, mu, logvar, dataset, seed, encoded_text)))
            prior = self.memo.stage("prior samples", params, model_inputs, lambda: panels.prior_samples(model, seed, device),
                                    extra=version)

        entry = read_entry(path.name, path.parent)
        mig = entry.get("metric", {}).get("value")
        origin = {"dataset sample": f"the encoding (mu) of {dataset} sample {seed}",
                  "encode input": "the encoding (mu) of the input's central square",
                  "prior sample": f"a draw from the prior N(0, I) (seed {seed})"}.get(source, "")
        layers = (
            ImageLayer("Decoded", decoded.permute(1, 2, 0), levels=(0.0, 1.0),
                       caption=panels.z_caption(source, origin, sliders, z)),
            panels.traversal_layer(traversal, d, source, kl),
            plane_layer,
            *static,
            ImageLayer("Prior samples", prior, levels=(0.0, 1.0),
                       caption=f"decode(z) for {panels.PRIOR_SAMPLES} z ~ N(0, I) (seed {seed}): what the model generates"),
            MetricsLayer("Metrics", {
                "model": path.name,
                "latent dimensions": d,
                "KL weight beta": entry.get("beta", "?"),
                "score": round(mig, 3) if mig is not None else "n/a",
                f"active dims (KL > {panels.UNUSED_KL:g})": int((kl > panels.UNUSED_KL).sum()),
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

    # -- Train action ------------------------------------------------------------------------
    def job_train(self, image: torch.Tensor, params: Mapping[str, Any], query: Query) -> Iterator[JobUpdate]:
        """Trains a fresh VAE on the chosen model's dataset, with the shipped model's latent size,
        with previews; Stop keeps what it learned."""
        from backends.training.vae import Trainer

        total = int(params["train_steps"])
        beta = float(params["train_beta"])
        seed = int(params["seed"])
        dataset = dataset_of(params["model"])
        trainer = Trainer(dataset, beta=beta, latent_dim=LATENT_DIMS[params["model"]], seed=seed,
                          warmup=min(500, max(1, total // 5)), device=image.device)
        fixed = torch.randn((16, trainer.model.latent_dim), generator=torch.Generator().manual_seed(seed)).to(image.device)
        held, _ = sampler(dataset)(8, HELD_OUT_SEED)
        held = held.to(image.device)
        yield from training_job(
            trainer, total, PREVIEW_EVERY, lambda losses: f"loss {losses['loss']:.1f}",
            preview=lambda seconds: panels.train_preview(trainer, fixed, held, seconds, total),
            save=lambda seconds: self._save_trained(trainer, seconds),
            steps_done=lambda: trainer.steps_done,
            saved=lambda: f"saved {trainer.steps_done} steps to {trained_path(dataset)}; choose weights = trained")

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
