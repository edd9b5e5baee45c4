"""Train the glyph ViT: ``python -m backends.training.glyph_vit``.

Fixed seed, one CPU thread by default, a few minutes on a 2-core CPU (``--max-minutes`` caps it at
the 15-minute budget). Writes assets/weights/glyph_vit_conv.safetensors (float16, the config in its
metadata) and its manifest entry with the accuracy on the fixed test set.
"""

from __future__ import annotations

import argparse

import torch

from backends.models.glyph_vit import WEIGHTS_PATH, GlyphViT, ViTConfig, config_dict
from backends.training.glyph_classifier import add_options, train_and_ship

MODULE = "backends.training.glyph_vit"
REPEATS = 8  # each pooled glyph seen 8 times (augmented): drawing then costs a tenth of a step


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__)
    add_options(p, steps=4500, repeats=REPEATS, out=WEIGHTS_PATH)
    p.add_argument("--dim", type=int, default=ViTConfig.dim)
    p.add_argument("--depth", type=int, default=ViTConfig.depth)
    p.add_argument("--stem", choices=("linear", "conv"), default=ViTConfig.stem)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = GlyphViT(ViTConfig(dim=args.dim, depth=args.depth, stem=args.stem))
    return train_and_ship(model, args, "glyph_vit", MODULE, config_dict(model))


if __name__ == "__main__":
    main()
