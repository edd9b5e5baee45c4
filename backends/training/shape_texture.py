"""Train the two texture-against-shape CNNs: ``python -m backends.training.shape_texture``.

Both networks start from the same seed and see the same sequence of image pools; the only
difference is the augmentation. ``plain`` trains on consistent images (shape and texture of the
class). ``shuffled`` trains with texture shuffling: each image's texture is, with probability
SHUFFLE, replaced by one drawn uniformly from the K class textures and two fills no class has
(flat colour, smooth blobs) while the label stays the shape's class, so the texture is a much
weaker cue than the shape (it agrees with the label in 1 - SHUFFLE + SHUFFLE / (K + 2) of the
images: 0.57). This is the procedural analogue of training on stylized images, where a random
painting's style replaces each image's own texture. (With the five class textures alone as
replacements the shape bias was as high, 0.990, but the network named few shapes filled with a
flat colour or a photo: it had never seen a shape without one of the five textures.)

Each network is scored on the fixed consistent test set (accuracy) and the fixed cue-conflict set
(shape-bias fraction); both go into its manifest entry with the steps, seed and seconds.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from backends.data import shape_texture as data
from backends.models.shape_texture import NETWORKS, ShapeTextureCNN, probabilities, shape_bias, weights_path
from backends.models.weights import save_weights
from backends.timing import elapsed_ms, now

SEED = 0
SHUFFLE = {"plain": 0.0, "shuffled": 0.5}
POOL = 4096
STEPS, BATCH, LR = 600, 64, 3e-3


def evaluate(model: torch.nn.Module) -> dict:
    """Accuracy on the fixed consistent test set and the shape bias on the fixed cue-conflict set."""
    model.eval()
    x, y, _ = data.test_set()
    acc = float((probabilities(model, x).argmax(1) == y).float().mean())
    xc, info = data.conflict_set()
    bias = shape_bias(probabilities(model, xc).argmax(1).numpy(), info["shape"], info["texture"])
    cue_only = {f"{k.replace(' ', '_')}_accuracy": round(float((probabilities(model, xs).argmax(1) == ys).float().mean()), 4)
                for k, (xs, ys) in data.cue_only_sets().items()}
    return {"test_accuracy": round(acc, 4), **cue_only, "cue_only_images": data.CUE_ONLY_SIZE, "test_images": int(len(y)), "test_seed": data.TEST_SEED,
            "conflict_seed": data.CONFLICT_SEED, "conflict_per_pair": data.CONFLICT_PER_PAIR,
            **{k: round(v, 4) if isinstance(v, float) else v for k, v in bias.items()}}


def train(name: str, steps: int = STEPS, batch: int = BATCH, lr: float = LR, write: bool = True) -> dict:
    """Trains one network from SEED and (when ``write``) ships it with its manifest entry."""
    torch.manual_seed(SEED)
    g = torch.Generator().manual_seed(SEED)
    model = ShapeTextureCNN()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    per_pool = POOL // batch * 2  # each pool seen about twice
    t0, losses = now(), []
    images = labels = None
    model.train()
    for step in range(steps):
        if step % per_pool == 0:
            images, labels, _ = data.sample(POOL, 1000 + step // per_pool, texture_shuffle=SHUFFLE[name])
        idx = torch.randint(0, POOL, (batch,), generator=g)
        loss = F.cross_entropy(model(images[idx]), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if (step + 1) % 100 == 0:
            print(f"{name} step {step + 1}/{steps} loss {np.mean(losses[-100:]):.4f} {elapsed_ms(t0) / 1e3:.0f}s",
                  flush=True)
    seconds = elapsed_ms(t0) / 1e3
    report = evaluate(model)
    report.update(steps=steps, batch=batch, lr=lr, seed=SEED, final_loss=round(float(np.mean(losses[-100:])), 4),
                  train_seconds=round(seconds, 1), threads=torch.get_num_threads(), torch=torch.__version__)
    print(name, report, flush=True)
    if write:
        entry = save_weights(weights_path(name), model.state_dict(), {
            "model": "shape_texture_cnn",
            "network": name,
            "dataset": "backends.data.shape_texture (procedural shapes filled with textures, pool seeds 1000+)",
            "augmentation": (f"texture shuffling: with probability {SHUFFLE[name]} the texture is replaced by one "
                             f"drawn uniformly from the {data.K} class textures and the foreign fills "
                             f"{', '.join(data.FOREIGN)}; label kept" if SHUFFLE[name] else "none"),
            "texture_shuffle": SHUFFLE[name],
            "classes": list(data.CLASS_NAMES),
            "script": "python -m backends.training.shape_texture",
            **report,
        })
        print(f"wrote {weights_path(name).name} sha256 {entry['sha256']}", flush=True)
    return report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--network", choices=(*NETWORKS, "both"), default="both")
    p.add_argument("--steps", type=int, default=STEPS)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    for name in NETWORKS if args.network == "both" else (args.network,):
        train(name, steps=args.steps, write=not args.no_write)


if __name__ == "__main__":
    main()
