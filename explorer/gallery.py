"""``make gallery``: every operator and model, at its defaults and two telling settings, rendered
at a small laptop's and a desktop's window size to a folder, to look at (not committed).

    python -m explorer.gallery [--out out/gallery] [--sizes 1366x768,1920x1080] [--ops a,b]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

from backends.registry import operator_names

# Two settings per operator that show what the defaults do not.
TELLING: dict[str, tuple[tuple[str, dict[str, object]], ...]] = {
    "dilated": (("gabor, dilation 6", {"kernel": "gabor", "dilation": 6}),
                ("mixed rates 1 2 5", {"rate_1": 1, "rate_2": 2, "rate_3": 5})),
    "deformable": (("learned offsets", {"offsets": "learned"}),
                   ("v2 mask on edges", {"offsets": "edges", "version": "v2"})),
    "spatial_transformer": (("thin-plate jitter 0.15", {"warp": "tps", "tps_jitter": 0.15}),
                            ("rotate 30", {"rotate": 30})),
    "squeeze_excitation": (("manual coarse", {"mode": "manual", "emphasis": "coarse scale"}),
                           ("random, r=8", {"mode": "random", "reduction": 8})),
    "self_attention": (("patch 8", {"patch": 8}), ("rotary position", {"position": "rotary"})),
    "vae": (("faces", {"model": "faces"}), ("encode input", {"source": "encode input"})),
    "vqvae": (("small tokens", {"size": 96}), ("paint code 5", {"replace_with": 5, "paint_radius": 3})),
    "maskgit": (("inpaint", {"mode": "inpaint input"}), ("linear schedule", {"schedule": "linear"})),
    "stylegan": (("psi 0.5", {"psi": 0.5}), ("smile +3", {"smile": 3.0})),
    "conv_family": (("two group layers, no shuffle, g=4", {"variant": "group pair", "groups": "4", "shuffle": False}),
                    ("depthwise x4, k=5", {"variant": "depthwise", "multiplier": 4, "kernel_size": "5"})),
    "upsampling": (("k=4 bilinear, no checkerboard", {"kernel_size": 4, "kernel": "bilinear", "output_padding": 0}),
                   ("pixel shuffle, s=3, random k=5", {"method": "pixel shuffle", "stride": 3, "kernel_size": 5,
                                                       "kernel": "random"})),
    "reparam": (("ACNet, depthwise", {"block": "acnet", "groups": "depthwise"}),
                ("DiracNet in float64", {"block": "diracnet", "precision": "float64"})),
    "deformable_kernels": (("rotate 90 degrees", {"deform": "rotate", "strength": 2.0}),
                           ("shrink into a 15x15 space", {"strength": -1.3, "space_size": "15"})),
    "aliasing": (("windowed sinc, cutoff 0.6", {"filter": "sinc", "cutoff": 0.6, "shift_y": 0.4}),
                 ("3 layers, Gaussian, 4x", {"layers": 3, "filter": "gaussian", "oversampling": "4"})),
    "feature_statistics": (("coffee's colours", {"target": "sample: coffee"}),
                           ("filter bank, brick", {"features": "filter bank", "target": "sample: brick"})),
    "position_embeddings": (("sinusoidal 1-D", {"scheme": "sinusoidal-1d"}),
                            ("rotary, separate q k, base 100", {"scheme": "rotary-2d", "rotary_content": "separate q and k",
                                                                "base_log10": 2.0, "similarity": "dot"})),
    "efficient_attention": (("window 4", {"window": 4}), ("relu features, patch 8", {"feature_map": "relu", "patch": 8})),
    "tricks": (("step: reparameterization fails", {"trick": "reparameterization", "function": "step"}),
               ("soft argmax on edges", {"trick": "soft argmax", "heatmap": "edges", "temperature": 0.02})),
    "saliency_sampling": (("edge saliency", {"source": "edges", "strength": 25}),
                          ("sharp zoom", {"source": "point", "strength": 30, "spread": 0.06})),
    "optical_flow": (("turn and zoom", {"rotate": 8, "scale": 1.1, "shift_x": 0, "shift_y": 0}),
                     ("Farneback, large shift", {"method": "Farneback", "shift_x": 12, "shift_y": -6, "rotate": 0})),
    "lab_mtcnn": (("permissive cascade", {"pnet_threshold": 0.4, "rnet_threshold": 0.4, "onet_threshold": 0.5}),
                  ("first-layer maps, small faces", {"feature_layer": "conv1", "scale": 1, "min_face": 16})),
    "lab_shape_texture": (("star shape, stripes texture", {"shape_class": "star", "texture_class": "stripes"}),
                          ("cross cut from brick", {"shape_class": "cross", "texture_from": "sample: brick"})),
    "lab_se_resnet": (("test glyph 3, by class in block 2", {"source": "test sample", "sample": 3, "block": 2}),
                      ("Grad-CAM for 8 on test glyph 12", {"source": "test sample", "sample": 12, "target": "8"})),
    "lab_stn": (("test sample 5", {"source": "test sample", "sample": 5}),
                ("test sample 42", {"source": "test sample", "sample": 42})),
    "lab_deformable": (("test sample 5", {"source": "test sample", "sample": 5}),
                       ("test sample 42", {"source": "test sample", "sample": 42})),
    "lab_vit": (("test glyph 7, layer 4 head 2", {"source": "test sample", "sample": 7, "layer": 4, "head": "2"}),
                ("from a clicked patch, layer 2", {"source": "test sample", "sample": 7, "attend_from": "clicked patch",
                                                   "layer": 2})),
    "lab_user_model": (("Grad-CAM for class 3, 8 channels", {"cam_class": 3, "channels": 8}),
                       ("attention from a clicked patch", {"attention_from": "clicked patch"})),
}


def settings_for(op: str) -> list[tuple[str, dict[str, object]]]:
    """Defaults first, then the telling settings whose parameters the operator has."""
    from backends.registry import spec_of

    names = {p.name for p in spec_of(op).params}
    extra = [(title, values) for title, values in TELLING.get(op, ()) if set(values) <= names]
    return [("defaults", {})] + extra


def render_all(out: Path, sizes: Sequence[tuple[int, int]], ops: Sequence[str]) -> list[str]:
    """Renders every (operator, setting, size); returns one line per picture or failure."""
    from PySide6 import QtWidgets

    from backends.imageio import load_image
    from explorer.app import build
    from explorer.cli import wait_for_frame
    from explorer.image_sources import sample_path
    from widgets.save_png import save_png

    out.mkdir(parents=True, exist_ok=True)
    image = load_image(sample_path("astronaut"))
    app = build(image, "astronaut", ops[0], restore_layout=False)
    lines = []
    try:
        for op in ops:
            for title, values in settings_for(op):
                app.session.set_operator(op)
                app.session.reset_params()
                if values:
                    app.session.set_params(values)
                for w, h in sizes:
                    app.window.resize(w, h)
                    app.window.show()
                    error = wait_for_frame(app)
                    for _ in range(5):
                        QtWidgets.QApplication.processEvents()
                    slug = title.replace(" ", "_").replace(",", "").replace("=", "")
                    path = out / f"{op}__{slug}__{w}x{h}.png"
                    if error:
                        lines.append(f"FAILED {path.name}: {error}")
                    elif save_png(app.window.grab(), path):
                        lines.append(f"wrote {path}")
    finally:
        app.close()
    return lines


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="gallery", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="out/gallery")
    p.add_argument("--sizes", default="1366x768,1920x1080")
    p.add_argument("--ops", default="")
    args = p.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",") if s]
    ops = [o for o in args.ops.split(",") if o] or operator_names()
    lines = render_all(Path(args.out), sizes, ops)
    print("\n".join(lines))
    return 1 if any(line.startswith("FAILED") for line in lines) else 0


if __name__ == "__main__":
    sys.exit(main())
