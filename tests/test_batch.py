"""A folder through the current operator: every readable image written as its primary picture,
an unreadable one named and skipped, a manifest that lists each."""

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import torch

from backends.imageio import load_image
from backends.layers import complete, materialize
from backends.params import validate
from backends.registry import operator_class, spec_of
from explorer.batch import picture_of, primary_layer, run_batch

ROOT = Path(__file__).resolve().parent.parent


def folder_with_a_broken_file(tmp_path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("coins.png", "chelsea.png"):
        shutil.copy(ROOT / "assets/images" / name, folder / name)
    (folder / "broken.jpg").write_text("not an image")
    (folder / "notes.txt").write_text("not an image either, and not an image's name")
    return folder


def test_a_batch_processes_every_image_and_names_the_broken_one(tmp_path):
    params = validate(spec_of("dilated").params, {"dilation": 4})
    report = run_batch(folder_with_a_broken_file(tmp_path), tmp_path / "out", "dilated", params, 2048,
                       torch.device("cpu"))
    assert [(i.file, i.status) for i in report.items] == [("broken.jpg", "failed"), ("chelsea.png", "done"),
                                                          ("coins.png", "done")]
    assert "not an image" in report.failed[0].error
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["failed"] == ["broken.jpg"] and manifest["params"]["dilation"] == 4
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["chelsea.png", "coins.png", "manifest.json"]


def test_each_result_is_the_operators_primary_picture_as_the_live_view_computes_it(tmp_path):
    params = validate(spec_of("spatial_transformer").params, {"rotate": 30.0})
    run_batch(folder_with_a_broken_file(tmp_path), tmp_path / "out", "spatial_transformer", params, 2048,
              torch.device("cpu"))
    image = load_image(ROOT / "assets/images/coins.png")
    tensor = torch.from_numpy(image.pixels).permute(2, 0, 1)[None]
    with torch.no_grad():
        result = materialize(complete(operator_class("spatial_transformer")().compute(tensor, params, None)))
    expected = picture_of(primary_layer("spatial_transformer", result))
    written = cv2.imread(str(tmp_path / "out" / "coins.png"))[..., ::-1]
    np.testing.assert_array_equal(written, expected)


def test_the_command_line_batch_says_what_failed_and_exits_1(tmp_path):
    from tests.test_cli import run_cli

    proc = run_cli("--op", "dilated", "--batch", str(folder_with_a_broken_file(tmp_path)), "--out", str(tmp_path / "o"))
    assert proc.returncode == 1
    assert "processed 2 of 3 images" in proc.stdout and "broken.jpg: not an image" in proc.stderr
