"""Model lab: your own model. Open a TorchScript file, a torch.export archive, a Python file
with ``build_model()`` plus weights, or a cached timm model (File > Open Model…); the lab runs it
on the image and shows its layers with output shapes, any layer's feature maps, Grad-CAM on the
proposed layer, the top-5 classes, attention (also from fused attention) with its rollout, and
deformable sampling points. Until a model is opened it shows the bundled example.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping, Optional

import torch

from backends.lab.capture import capture, grad_cam_at, model_input
from backends.lab.loading import LoadedModel, ModelSource, example_source, load_model
from backends.layers import Result
from backends.models.cache import cached_model
from backends.ops import _lab_user_model_panels as panels
from backends.params import ChoiceParam, IntParam, ParamError
from backends.registry import Action, JobUpdate, Operator, OperatorSpec, Query, register
from backends.timing import StageTimer

INPUT = ("size", "normalize")


def _example(_path) -> LoadedModel:
    return load_model(example_source())


@register
class LabUserModel(Operator):
    spec = OperatorSpec(
        name="lab_user_model",
        title="Your own model",
        family="Model lab",
        description="Open your own network with File > Open Model… (TorchScript, torch.export, a Python file "
                    "with build_model() plus weights, or a cached timm model); until then the bundled example "
                    "runs. Layers with shapes, feature maps, Grad-CAM on the proposed layer, top-5 classes, "
                    "attention and rollout (also from fused attention), deformable sampling points.",
        params=(
            IntParam("size", 224, 16, 512, 16, help="Input side in pixels when the model declares no input size "
                                                     "(the whole image is resized to it)"),
            ChoiceParam("normalize", "model default", ("model default", "imagenet", "none"),
                        help="Input normalisation: ImageNet mean and std, none ([0, 1]), or what the model declares"),
            IntParam("layer", 0, 0, 2000, help="Layer shown as feature maps: its number in the Layers list; "
                                               "0 = the proposed Grad-CAM layer"),
            IntParam("channels", 16, 1, 64, help="How many of the layer's channels the mosaic shows (the strongest)"),
            IntParam("cam_layer", 0, 0, 2000, help="Grad-CAM's layer: its number in the Layers list; 0 = proposed "
                                                   "(the last convolution, or the last attention block's input)"),
            IntParam("cam_class", -1, -1, 100_000, help="Class explained by Grad-CAM: its index; -1 = the top class"),
            IntParam("attention_block", 0, 0, 500, help="Attention block shown: 1 = the first; 0 = the last"),
            ChoiceParam("attention_from", "class token", ("class token", "clicked patch"),
                        help="Whose attention is drawn: the class token's (the mean query when the model has "
                             "none) or the clicked patch's"),
            IntParam("head", 0, 0, 64, help="Attention head: 1 = the first; 0 = the mean over heads"),
            IntParam("deform_layer", 0, 0, 200, help="Deformable layer shown: 1 = the first; 0 = the first too"),
        ),
        actions=(Action("load", "Load model", help="Loads the model chosen with File > Open Model… (or reloads "
                                                   "the current one from disk), on the worker"),),
        primary="Grad-CAM",
        tabs=(("explain", ("Grad-CAM", "Top-5 classes", "Attention", "Attention rollout")),
              ("layers", ("Layers", "Feature maps", "Deformable sampling", "Model"))),
    )
    memo_capacity = 12

    def __init__(self) -> None:
        super().__init__()
        self.loaded: Optional[LoadedModel] = None
        self.generation = 0

    def reset_state(self) -> None:
        super().reset_state()
        self.loaded, self.generation = None, self.generation + 1

    def model(self) -> LoadedModel:
        """The model the user loaded, else the bundled example."""
        if self.loaded is not None:
            return self.loaded
        return cached_model(example_source().path, _example)

    def run(self, image: torch.Tensor, params: Mapping[str, Any], query: Query) -> Result:
        loaded, gen = self.model(), (self.generation, id(self.model()))
        image = image.cpu()
        timer = StageTimer()
        with timer("input"):
            x = self.memo.stage("input", params, INPUT, lambda: model_input(image, loaded, params["size"],
                                                                            params["normalize"]), extra=gen)
        with timer("forward"):
            cap = self.memo.stage("capture", params, INPUT, lambda: capture(loaded, x), extra=gen)
        with timer("grad-cam"):
            cam_layer = cap.layer(params["cam_layer"]).path
            cls = None if params["cam_class"] < 0 else params["cam_class"]
            cam = self.memo.stage("cam", params, (*INPUT, "cam_layer", "cam_class"),
                                  lambda: grad_cam_at(loaded, x, cam_layer, cls), extra=gen)
        view = panels.View(loaded, cap, cam, tuple(image.shape[-2:]), tuple(x.shape[-2:]), query,
                           example=self.loaded is None)
        layers = panels.build(view, params)
        notes = tuple(cap.warnings) + tuple(loaded.notes)
        return Result(layers=(*layers, panels.model_metrics(view, timer)), notes=notes)

    def job_load(self, image: torch.Tensor, params: Mapping[str, Any], query: Query,
                 source: Optional[Mapping[str, str]] = None) -> Iterator[JobUpdate]:
        """Loads the chosen model, runs it once on the image, and only then adopts it: a model
        that fails to load or to run leaves the current one in place."""
        source = ModelSource(**source) if source else self.loaded.source if self.loaded is not None else None
        if source is None:
            raise ParamError("choose a model first with File > Open Model…")
        yield JobUpdate(0.05, f"loading {source.label}…")
        loaded = load_model(source)
        yield JobUpdate(0.6, f"running {source.label} on the image…")
        capture(loaded, model_input(image.cpu(), loaded, params["size"], params["normalize"]))
        self.memo.clear()
        self.loaded, self.generation = loaded, self.generation + 1
        yield JobUpdate(1.0, f"loaded {source.label}")
