"""Model lab operator and loading: the bundled example shows every panel; File > Open Model…
loads on the worker; a corrupt file, a model that raises in forward and a pickle holding a
custom class each give a clear message naming the file, and the previous model stays."""

import pickle
from dataclasses import asdict

import numpy as np
import pytest
import torch
from torch import nn

from backends.lab.loading import ModelLoadError, ModelSource, load_model, load_state_dict
from backends.layers import HeatmapLayer, PointsLayer
from backends.registry import operator_class, validated_params
from tests.conftest import wait_for_frame

pytestmark = pytest.mark.usefixtures("one_thread")
NAME = "lab_user_model"


class Custom:  # a class a weights file must never be able to instantiate
    pass


def run(op, **params):
    return op.compute(torch.rand(1, 3, 40, 56, generator=torch.Generator().manual_seed(0)),
                      validated_params(NAME, params), (30, 10))


def test_the_bundled_example_shows_every_panel_and_says_how_to_open_a_model():
    result = run(operator_class(NAME)())
    assert set(result.names) >= {"Grad-CAM", "Top-5 classes", "Layers", "Feature maps", "Attention",
                                 "Attention rollout", "Deformable sampling", "Model"}
    assert "File > Open Model" in result.layer("Model").values["model"]
    cam = result.layer("Grad-CAM")
    assert isinstance(cam, HeatmapLayer) and cam.extent == (0.0, 0.0, 56.0, 40.0)
    assert "* proposed for Grad-CAM" in " ".join(result.layer("Layers").values.values())
    pts = result.layer("Deformable sampling")
    assert isinstance(pts, PointsLayer) and len(pts.sets[1].points) == 9


def test_a_python_file_with_weights_loads_through_the_job(tmp_path):
    (tmp_path / "net.py").write_text(
        "import torch.nn as nn\nINPUT_SIZE = (20, 24)\nCLASSES = ('cat', 'dog', 'owl')\n"
        "def build_model():\n    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(3))\n")
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 18 * 22, 3))
    torch.save(model.state_dict(), tmp_path / "net.pt")
    op = operator_class(NAME)()
    source = asdict(ModelSource.for_file(str(tmp_path / "net.py"), str(tmp_path / "net.pt")))
    updates = list(op.start("load", torch.rand(1, 3, 30, 30), validated_params(NAME, {}), None, args={"source": source}))
    assert updates[-1].progress == 1.0 and "net.py" in updates[-1].message
    result = run(op)
    assert result.layer("Model").values["input"] == "3x20x24"
    assert all(label.split(" (")[0] in ("cat", "dog", "owl") for label in result.layer("Top-5 classes").labels)
    assert torch.allclose(op.loaded.module[3].weight, model[3].weight)


def test_a_corrupt_file_names_the_file_and_the_reason(tmp_path):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a model at all")
    with pytest.raises(ModelLoadError, match=r"broken\.pt.*TorchScript"):
        load_model(ModelSource.for_file(str(bad)))
    with pytest.raises(ModelLoadError, match=r"broken\.pt2.*torch\.export"):
        bad2 = tmp_path / "broken.pt2"
        bad2.write_bytes(b"\x00" * 10)
        load_model(ModelSource.for_file(str(bad2)))


def test_weights_only_is_enforced(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"w": Custom()}, f)
    with pytest.raises(ModelLoadError, match=r"evil\.pt.*refused.*weights_only"):
        load_state_dict(str(path))


def test_a_model_that_raises_in_forward_fails_its_load_and_the_old_model_stays(tmp_path):
    (tmp_path / "boom.py").write_text(
        "import torch.nn as nn\nclass Boom(nn.Module):\n    def forward(self, x):\n"
        "        raise RuntimeError('kaboom')\ndef build_model():\n    return Boom()\n")
    op = operator_class(NAME)()
    source = asdict(ModelSource.for_file(str(tmp_path / "boom.py")))
    with pytest.raises(ModelLoadError, match=r"boom\.py failed to run.*RuntimeError: kaboom"):
        list(op.start("load", torch.rand(1, 3, 30, 30), validated_params(NAME, {}), None, args={"source": source}))
    assert op.loaded is None  # the example is still shown
    assert "Grad-CAM" in run(op).names


def test_open_model_loads_on_the_worker_and_a_bad_file_leaves_the_window_working(app, qtbot, tmp_path):
    from explorer import model_lab

    w = app.window
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"\x00garbage")
    with qtbot.waitSignal(app.scheduler.jobEnded, timeout=60_000) as ended:
        model_lab.load(w, ModelSource.for_file(str(bad)))
    assert ended.args[0].failed and "corrupt.pt" in ended.args[0].how
    assert "corrupt.pt" in w.banner.text()
    wait_for_frame(qtbot, w)
    assert app.session.operator == NAME and "Grad-CAM" in w.docks.panels  # the example is drawn

    model = torch.jit.script(nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                           nn.Flatten(), nn.Linear(5, 4)))
    torch.jit.save(model, tmp_path / "good.pt")
    with qtbot.waitSignal(app.scheduler.jobEnded, timeout=60_000) as ended:
        model_lab.load(w, ModelSource.for_file(str(tmp_path / "good.pt")))
    assert not ended.args[0].failed
    wait_for_frame(qtbot, w)
    assert "Loaded" not in w.banner.text() or not w.banner.isVisible() or "error" not in w.banner.level
    assert np.isfinite(app.session.pixels).all()


def test_the_bundled_example_ships_trained_weights_that_reach_their_stated_accuracy():
    """The example's weights load checked against the manifest's sha256, and classify the first
    500 items of the fixed test set about as well as the manifest says of all 2000."""
    from backends.data import cluttered_glyphs as cg
    from backends.lab.loading import EXAMPLE_WEIGHTS, example_source
    from backends.models.weights import read_manifest

    entry = read_manifest(EXAMPLE_WEIGHTS.parent)[EXAMPLE_WEIGHTS.name]
    assert entry["test_accuracy"] >= 0.95
    loaded = load_model(example_source())
    assert loaded.source.weights and not any("untrained" in note for note in loaded.notes)
    x, y, _ = cg.test_set()
    with torch.no_grad():
        accuracy = float((loaded.module.eval()(x[:500]).argmax(1) == y[:500]).float().mean())
    assert accuracy >= entry["test_accuracy"] - 0.03
