"""Converts the pretrained MTCNN weights once into assets/weights/mtcnn_{pnet,rnet,onet}.safetensors.

Run by hand (the app never downloads anything; facenet-pytorch is not a dependency):

    pip download --no-deps facenet-pytorch==2.6.0 -d /tmp/fp
    .venv/bin/python -m assets.convert_mtcnn /tmp/fp/facenet_pytorch-2.6.0-py3-none-any.whl

The wheel (MIT licence, copyright (c) 2019 Timothy Esler) holds the three networks as plain state
dicts in ``facenet_pytorch/data/{pnet,rnet,onet}.pt``. The script checks the wheel's sha256 against
the one the package registry lists, reads each file with ``torch.load(weights_only=True)`` (tensors
only, no code runs), checks every key and shape against the project's own modules
(``backends/models/mtcnn.py``), and writes float32 safetensors with a manifest entry naming the
source, its sha256, the licence and the attribution. They stay float32, the published numbers
exactly, because the three files are 2 MB in all; float16 would move O-Net's face probability by
up to 3.3e-4 on random crops (the script prints it).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
import zipfile
from pathlib import Path

import torch

from backends.models.mtcnn import CLASSES, NETS, shipped_path
from backends.models.weights import save_weights

WHEEL = "facenet_pytorch-2.6.0-py3-none-any.whl"
WHEEL_SHA256 = "ecb82b27beb226d106f2219efe8f829b01b87a8595badd01545679bdb9f19cca"  # as listed on pypi.org
ATTRIBUTION = ("MTCNN weights (Zhang et al. 2016) as ported to PyTorch in facenet-pytorch 2.6.0 by Timothy Esler, "
               "https://github.com/timesler/facenet-pytorch; MIT licence, see assets/weights/MTCNN-LICENSE.txt")


def read_state_dicts(wheel: Path) -> dict[str, dict[str, torch.Tensor]]:
    """The three state dicts from the wheel, after checking its sha256."""
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        raise SystemExit(f"{wheel.name}: sha256 {digest} is not the registry's {WHEEL_SHA256}")
    out = {}
    with zipfile.ZipFile(wheel) as zf:
        for net in NETS:
            data = zf.read(f"facenet_pytorch/data/{net}.pt")
            out[net] = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    return out


def check_against_modules(state: dict[str, dict[str, torch.Tensor]]) -> None:
    """Every key and shape equal to the project's module definitions (strict load)."""
    for net, sd in state.items():
        CLASSES[net]().load_state_dict(sd, strict=True)


def half_error(state: dict[str, dict[str, torch.Tensor]]) -> float:
    """The largest change of O-Net's face probability on seeded random crops when its weights are
    rounded to float16: the reason these files stay float32."""
    torch.manual_seed(0)
    x = torch.randn(256, 3, 48, 48)
    full, half = CLASSES["onet"](), CLASSES["onet"]()
    full.load_state_dict(state["onet"])
    half.load_state_dict({k: v.half().float() for k, v in state["onet"].items()})
    with torch.no_grad():
        return float((full(x)[0] - half(x)[0]).abs().max())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("wheel", type=Path, help=f"path to {WHEEL}")
    args = parser.parse_args(argv)
    state = read_state_dicts(args.wheel)
    check_against_modules(state)
    print(f"float16 would change O-Net's face probability by up to {half_error(state):.2e}")
    for net, sd in state.items():
        entry = {
            "model": f"mtcnn_{net}",
            "source": f"{WHEEL} (facenet_pytorch/data/{net}.pt)",
            "source_sha256": WHEEL_SHA256,
            "licence": "MIT",
            "attribution": ATTRIBUTION,
            "paper": "Zhang, Zhang, Li, Qiao: Joint face detection and alignment using multi-task cascaded "
                     "convolutional networks, IEEE Signal Processing Letters 23(10), 2016",
            "script": "python -m assets.convert_mtcnn " + WHEEL,
            "dtype": "float32",
        }
        written = save_weights(shipped_path(net), sd, entry, metadata={"net": net}, half=False)
        print(f"{shipped_path(net).name}: {written['parameters']} parameters, sha256 {written['sha256'][:12]}…")
    return 0


if __name__ == "__main__":
    sys.exit(main())
