"""Train the glyph ViT: ``python -m backends.training.glyph_vit``.

Fixed seed, one CPU thread by default, a few minutes on a 2-core CPU (``--max-minutes`` caps it at
the 15-minute budget). Writes assets/weights/glyph_vit_conv.safetensors (float16, the config in its
metadata) and its manifest entry with the accuracy on the fixed test set.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from backends.models.glyph_vit import WEIGHTS_PATH, GlyphViT, ViTConfig, config_dict
from backends.models.weights import save_weights
from backends.training.glyph_classifier import Trainer, test_accuracy, train
from backends.training.loop import add_common_options

MODULE = "backends.training.glyph_vit"
REPEATS = 8  # each pooled glyph seen 8 times (augmented): drawing then costs a tenth of a step


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__)
    add_common_options(p)
    p.add_argument("--steps", type=int, default=4500)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--pool", type=int, default=8192)
    p.add_argument("--repeats", type=int, default=REPEATS, help="how often each pooled glyph is seen (augmented)")
    p.add_argument("--dim", type=int, default=ViTConfig.dim)
    p.add_argument("--depth", type=int, default=ViTConfig.depth)
    p.add_argument("--stem", choices=("linear", "conv"), default=ViTConfig.stem)
    p.add_argument("--out", type=Path, default=WEIGHTS_PATH)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = GlyphViT(ViTConfig(dim=args.dim, depth=args.depth, stem=args.stem))
    trainer = Trainer(model, args.steps, args.batch, args.lr, args.pool, args.seed, repeats=args.repeats)
    seconds, wall = train(trainer, args.steps, args.log_every, args.max_minutes)
    acc = test_accuracy(model)
    entry = trainer.manifest_entry("glyph_vit", MODULE, seconds, args.threads, acc, wall)
    entry["config"] = config_dict(model)
    print(f"test accuracy {acc:.4f} after {trainer.steps_done} steps, {seconds:.0f} CPU s, {wall:.0f} s wall", flush=True)
    if not args.no_write:
        entry = save_weights(args.out, model.state_dict(), entry, metadata=config_dict(model))
        print(f"wrote {args.out} sha256 {entry['sha256']}", flush=True)
    return entry


if __name__ == "__main__":
    main()
