"""Writes the README's pictures of the shipped StyleGAN-like generator into docs/images/
(run: ``python -m assets.make_stylegan_pictures``; ``--out`` and ``--weights`` to change them).

Data beside samples, a style-mixing grid, attribute (InterFaceGAN) and principal (GANSpace) edits,
the conditioning (one attribute of c replaced per column), and projections of held-out data faces
into w and w+. Deterministic: fixed seeds throughout.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch

from backends.data.faces import sample_faces
from backends.imageio import save_png
from backends.imaging import hwc, image_grid
from backends.models.stylegan import (
    ATTRIBUTE_DIRECTIONS,
    DIRECTIONS_PATH,
    LAYER_GROUPS,
    WEIGHTS_PATH,
    Generator,
    attributes_from_z,
    load_directions,
    load_generator,
    mix_styles,
    z_from_seed,
)
from backends.models.stylegan_projection import project, synthesize

OUT = Path(__file__).resolve().parents[1] / "docs" / "images"
DATA_SEED = 11  # the training script's evaluation seed: faces the generator never trained on
BACKGROUND = 24  # of 255: the gaps between tiles and the header bars
SCALE = 4
EDIT_SEEDS = (2, 5, 8, 13)
PROJECTION_STEPS = 300


def tiles(images: torch.Tensor, columns: int) -> np.ndarray:
    """(N, 3, 32, 32) in [0, 1] -> uint8 (H, W, 3), ``columns`` tiles a row, upscaled ``SCALE`` times."""
    grid = hwc(image_grid(images, columns, scale=SCALE, gap=1, fill=BACKGROUND / 255))
    return (grid.clamp(0, 1).numpy() * 255).round().astype(np.uint8)


def header(img: np.ndarray, labels: list[str], columns: int) -> np.ndarray:
    """``img`` under a bar with one label per column."""
    bar = np.full((26, img.shape[1], 3), BACKGROUND, np.uint8)
    cw = img.shape[1] / columns
    for i, text in enumerate(labels):
        cv2.putText(bar, text, (int(i * cw + 4), 18), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (230, 230, 230), 1, cv2.LINE_AA)
    return np.vstack([bar, img])


def samples_picture(G: Generator) -> np.ndarray:
    real, _ = sample_faces(32, DATA_SEED)
    fake = synthesize(G, G.map(z_from_seed(list(range(32)))))
    left, right = tiles(real, 4), tiles(fake, 4)
    gap = np.full((left.shape[0], 16, 3), BACKGROUND, np.uint8)
    return header(np.hstack([left, gap, right]), ["data (procedural faces)", "", "", "",
                                                  "generator, seeds 0-31, psi 1", "", "", ""], 8)


def mixing_picture(G: Generator) -> np.ndarray:
    """Rows: seed A; columns: A, B, then A with B's coarse, middle and fine styles."""
    wa, wb = G.map(z_from_seed([1, 6, 9, 14])), G.map(z_from_seed([20, 27, 33, 41]))
    cells = []
    for i in range(4):
        a, b = wa[i: i + 1], wb[i: i + 1]
        cells += [a, b] + [mix_styles(a, b, LAYER_GROUPS[g]) for g in ("coarse", "middle", "fine")]
    return header(tiles(synthesize(G, torch.cat(cells)), 5), ["A", "B", "A + B coarse", "A + B middle", "A + B fine"], 5)


def edits_picture(G: Generator, dirs: dict[str, torch.Tensor], kind: str) -> np.ndarray:
    """Four seeds, each moved -2, 0, +2 units along three attribute or principal directions."""
    if kind == "attr":
        moves = [(a, dirs[f"attr.{a}.direction"], dirs[f"attr.{a}.std"]) for a in ATTRIBUTE_DIRECTIONS]
    else:
        moves = [(f"PC{k + 1}", dirs["pca.directions"][k], dirs["pca.std"][k]) for k in range(3)]
    steps = torch.tensor([-2.0, 0.0, 2.0])[:, None, None]
    cells = [G.map(z_from_seed([s])) + steps * sd * d for s in EDIT_SEEDS for _, d, sd in moves]
    labels = [f"{name} {v:+g}" for name, _, _ in moves for v in (-2, 0, 2)]
    return header(tiles(synthesize(G, torch.cat(cells)), 9), labels, 9)


def conditioning_picture(G: Generator) -> np.ndarray:
    """Each seed with one attribute of its c replaced (the rest of c and z kept)."""
    edits = (("frown", 0, -0.6), ("smile", 0, 0.9), ("no glasses", 2, 0.0), ("glasses", 2, 1.0),
             ("bald", 3, None), ("short hair", 4, None), ("long hair", 5, None), ("tilt -25", 1, -25 / 30),
             ("tilt +25", 1, 25 / 30))
    cells = []
    for s in EDIT_SEEDS:
        z = z_from_seed([s])
        for _, k, v in edits:
            c = attributes_from_z(z)
            if v is None:  # a hair style: one-hot
                c[:, 3:] = 0.0
                c[:, k] = 1.0
            else:
                c[:, k] = v
            cells.append(G.map(z, c=c))
    return header(tiles(synthesize(G, torch.cat(cells)), len(edits)), [e[0] for e in edits], len(edits))


def projection_picture(G: Generator) -> tuple[np.ndarray, list[float]]:
    """Held-out data faces and their projections into w and w+ (the operator's Project action)."""
    targets, _ = sample_faces(4, DATA_SEED + 5)
    cells, losses = [], []
    for t in targets:
        cells.append(t[None])
        for space in ("w", "w+"):
            *_, fit = project(G, t[None], space, steps=PROJECTION_STEPS)  # the fit after its last step
            cells.append(synthesize(G, fit.ws))
            losses.append(fit.loss[-1])
    img = header(tiles(torch.cat(cells), 3), ["target (data face)", "projected, w", "projected, w+"], 3)
    return img, losses


@torch.no_grad()
def write_pictures(G: Generator, dirs: dict[str, torch.Tensor], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    pictures = {
        "stylegan_samples.png": samples_picture(G),
        "stylegan_mixing.png": mixing_picture(G),
        "stylegan_attribute_edits.png": edits_picture(G, dirs, "attr"),
        "stylegan_pca_edits.png": edits_picture(G, dirs, "pca"),
    }
    if G.c_dim:
        pictures["stylegan_conditioning.png"] = conditioning_picture(G)
    pictures["stylegan_projection.png"], losses = projection_picture(G)
    print(f"projection final losses (w, w+ per face): {[round(v, 4) for v in losses]}")
    paths = []
    for name, rgb in pictures.items():
        save_png(out_dir / name, rgb)
        paths.append(out_dir / name)
        print(f"wrote {out_dir / name}")
    return paths


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=OUT, help="folder the pictures are written to")
    p.add_argument("--weights", type=Path, default=WEIGHTS_PATH, help="generator weights")
    p.add_argument("--directions", type=Path, default=DIRECTIONS_PATH, help="its latent directions")
    args = p.parse_args()
    write_pictures(load_generator(args.weights), load_directions(args.directions), args.out)


if __name__ == "__main__":
    main()
