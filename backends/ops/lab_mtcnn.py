"""Model lab: a real face detector. The pretrained MTCNN (P-, R- and O-Net; weights converted once
by ``assets/convert_mtcnn.py``, MIT, see assets/weights/MTCNN-LICENSE.txt) on any photo, stage by
stage: P-Net's face-probability heatmap at each pyramid scale, the candidate boxes after P-Net and
NMS, those R-Net keeps, and O-Net's final boxes with five landmarks; P-Net's first-layer filters
and a chosen layer's feature maps. Each stage is memoised on the parameters it reads, so moving the
O-Net threshold only filters boxes again; the panels are built in ``_lab_mtcnn_panels``.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

import backends.ops._lab_mtcnn_panels as panels
from backends.imaging import resize
from backends.layers import MetricsLayer, Result
from backends.models.mtcnn import load_mtcnn, normalise
from backends.models.mtcnn_detect import (
    Detection,
    candidates,
    finish,
    onet_scores,
    propose,
    pyramid,
    refine,
    rnet_scores,
)
from backends.params import ChoiceParam, FloatParam, IntParam, ParamError
from backends.registry import Operator, OperatorSpec, Query, register
from backends.timing import StageTimer

FEATURE_LAYERS = ("conv1", "pool1", "conv2", "conv3")
MAX_SCALES = 16
PROPOSAL_INPUTS = ("min_face", "pnet_threshold")  # what R-Net's input depends on
REFINED_INPUTS = PROPOSAL_INPUTS + ("rnet_threshold",)  # and O-Net's
CASCADE_LAYERS = ("Faces", "After R-Net", "Boxes per stage")  # the panels that wait for R-Net and O-Net
METRICS_CAPTION = "Boxes at each stage and stage timings."


@register
class MTCNNLab(Operator):
    spec = OperatorSpec(
        name="lab_mtcnn",
        title="MTCNN face detector",
        family="Model lab",
        description=(
            "A real, pretrained face detector (MTCNN, Zhang et al. 2016) on your photo, stage by stage. P-Net slides "
            "a 12-pixel window over an image pyramid and gives a face probability per window; its best windows, "
            "thinned by non-maximum suppression, go to R-Net (24-pixel crops) and then O-Net (48-pixel crops), "
            "which also places five landmarks. Weights: facenet-pytorch 2.6.0 (MIT, Timothy Esler)."
        ),
        params=(
            IntParam("min_face", 20, 12, 200, help="Smallest face to look for, in pixels: the first pyramid scale maps "
                     "it to P-Net's 12-pixel window (12 / min_face); each next scale is 0.709 times smaller."),
            FloatParam("pnet_threshold", 0.6, 0.3, 0.99, step=0.01,
                       help="P-Net's face probability a window needs to become a candidate box."),
            FloatParam("rnet_threshold", 0.7, 0.05, 0.99, step=0.01,
                       help="R-Net's face probability a candidate needs to reach O-Net."),
            FloatParam("onet_threshold", 0.7, 0.05, 0.99, step=0.01,
                       help="O-Net's face probability a box needs to be reported as a face."),
            IntParam("scale", 4, 0, MAX_SCALES - 1, help="Pyramid scale shown in the P-Net heatmap and feature maps "
                     "(0 = the largest image, for the smallest faces; 4 finds faces of about 80 px at min_face "
                     "20); beyond the image's last scale, the last."),
            ChoiceParam("feature_layer", "conv3", FEATURE_LAYERS,
                        help="P-Net layer whose feature maps are shown, on the image at the chosen scale."),
        ),
        uses_query=False,
        primary="Faces",
        tabs=(
            ("stages", ("P-Net heatmap", "After P-Net (+NMS)", "After R-Net", "Boxes per stage")),
            ("pyramid", ("P-Net at every scale",)),
            ("network", ("P-Net conv1 filters", "P-Net feature maps", "Metrics")),
        ),
    )
    memo_capacity = 24

    def run(self, image: torch.Tensor, params: Mapping[str, Any], query: Query) -> Result:
        """P-Net's panels at once; R-Net's and O-Net's too on a new image (the first frame has every
        panel, the faces in the centre) or when their stage is cached; else they come with ``settle``
        (a P-Net threshold or face-size drag stays fast)."""
        timer = StageTimer()
        seen = self.memo.stage_key("filters", params, ()) in self.memo  # this image has been shown before
        pnet = load_mtcnn(image.device)[0]
        h, w = image.shape[2:]
        min_face = int(params["min_face"])
        if min(h, w) < min_face:
            raise ParamError(f"min_face: this {w} x {h} image cannot hold a {min_face}-pixel face; "
                             f"choose min_face {max(12, min(h, w))} or less")
        with timer("P-Net pyramid"):
            levels = self.memo.stage("pyramid", params, ("min_face",), lambda: pyramid(pnet, image, min_face))
        with timer("candidates, NMS"):
            cands, proposals = self.memo.stage("proposals", params, PROPOSAL_INPUTS,
                                               lambda: self._propose(levels, float(params["pnet_threshold"]), h, w))
        k = min(int(params["scale"]), len(levels) - 1)
        with timer("P-Net panels"):
            pnet_layers = (
                panels.heatmap_layer(levels, int(params["scale"]), h, w),
                panels.boxes_layer("After P-Net (+NMS)", proposals,
                                   f"{len(proposals)} proposals: of {len(cands)} P-Net windows at or over "
                                   f"{params['pnet_threshold']:.2f} (all scales), those left by NMS within each scale "
                                   "(IoU 0.5) and across scales (0.7), moved by P-Net's box regression and made "
                                   "square. R-Net reads each."),
                self.memo.stage("overview", params, ("min_face",), lambda: panels.every_scale_layer(levels, image)),
                self.memo.stage("filters", params, (), lambda: panels.filters_layer(pnet.conv1.weight)),
                panels.features_layer(self.memo.stage("features", params, ("min_face", "scale", "feature_layer"),
                                                      lambda: self._features(pnet, image, levels[k].size,
                                                                             params["feature_layer"])),
                                      params["feature_layer"], levels[k]),
            )

        def complete() -> Result:
            return self._cascade(image, params, levels, cands, proposals, pnet_layers, timer)

        if not seen or self.memo.stage_key("rnet", params, PROPOSAL_INPUTS) in self.memo:
            return complete()
        metrics = {"image": f"{w} x {h}", "pyramid scales": len(levels), "P-Net windows over threshold": len(cands),
                   "proposals": len(proposals), **timer.metrics()}
        return Result(pnet_layers + (MetricsLayer("Metrics", metrics, caption=METRICS_CAPTION),), settle=complete,
                      pending=CASCADE_LAYERS)

    def _cascade(self, image, params, levels, cands, proposals, pnet_layers, timer: StageTimer) -> Result:
        """R-Net and O-Net on the proposals (memoised), and every panel."""
        _, rnet, onet = load_mtcnn(image.device)
        t2, t3 = float(params["rnet_threshold"]), float(params["onet_threshold"])
        with timer("R-Net"):
            scored_r = self.memo.stage("rnet", params, PROPOSAL_INPUTS, lambda: rnet_scores(rnet, image, proposals))
            refined = self.memo.stage("refined", params, REFINED_INPUTS, lambda: refine(scored_r, t2))
        with timer("O-Net"):
            scored_o = self.memo.stage("onet", params, REFINED_INPUTS, lambda: onet_scores(onet, image, refined))
            faces = finish(scored_o, t3)
        d = Detection(levels, cands, proposals, refined, faces)
        layers = (
            panels.faces_layer(faces, int(params["min_face"]), t3),
            *pnet_layers[:2],
            panels.boxes_layer("After R-Net", refined,
                               f"{len(refined)} of the {len(proposals)} proposals scored over {t2:.2f} by R-Net and "
                               "survived NMS (IoU 0.7); moved by R-Net's regression and made square. O-Net reads each."),
            panels.stage_bars(d),
            *pnet_layers[2:],
        )
        h, w = image.shape[2:]
        metrics = {"image": f"{w} x {h}", "pyramid scales": len(levels), "P-Net windows over threshold": len(cands),
                   "proposals": len(proposals), "kept by R-Net": len(refined), "faces": len(faces), **timer.metrics()}
        notes = () if len(faces) else ("no face found",)
        return Result(layers + (MetricsLayer("Metrics", metrics, caption=METRICS_CAPTION),), notes=notes)

    @staticmethod
    def _propose(levels, threshold: float, h: int, w: int):
        cands = candidates(levels, threshold, h, w)
        return cands, propose(cands)

    @staticmethod
    def _features(pnet, image: torch.Tensor, size: tuple[int, int], layer: str) -> torch.Tensor:
        return pnet.features(normalise(resize(image, size)))[layer][0]
