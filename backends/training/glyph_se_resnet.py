"""Train the glyph SE-ResNet: ``python -m backends.training.glyph_se_resnet``.

Fixed seed, one CPU thread by default, a few minutes on a 2-core CPU (``--max-minutes`` caps it at
the 15-minute budget). Writes assets/weights/glyph_se_resnet.safetensors (float16, the config in its
metadata) and its manifest entry with the accuracy on the fixed test set.
"""

from __future__ import annotations

import argparse

import torch

from backends.models.glyph_se_resnet import WEIGHTS_PATH, GlyphSEResNet, config_dict
from backends.training.glyph_classifier import add_options, train_and_ship

MODULE = "backends.training.glyph_se_resnet"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__)
    add_options(p, steps=1200, repeats=4, out=WEIGHTS_PATH)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = GlyphSEResNet()
    return train_and_ship(model, args, "glyph_se_resnet", MODULE, config_dict(model))


if __name__ == "__main__":
    main()
