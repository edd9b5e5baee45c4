"""The shipped glyph ViT and its lab: the stated test accuracy, and what each panel draws against a
forward pass written out in the test (q, k and softmax by hand, relevance by nested loops)."""

import math

import pytest
import torch

from backends.data.cluttered_glyphs import SIZE, from_image, test_set
from backends.layers import complete, materialize
from backends.models.glyph_vit import WEIGHTS_PATH, load_glyph_vit
from backends.models.weights import read_manifest
from backends.params import defaults
from backends.registry import operator_class, spec_of

TOL = 1e-5  # float32, two orders of the same arithmetic


@pytest.fixture(scope="module")
def model():
    return load_glyph_vit("cpu")


def _run(params, image, query=(50, 30)):
    op = operator_class("lab_vit")()
    with torch.no_grad():
        return materialize(complete(op.compute(image, {**defaults(spec_of("lab_vit").params), **params}, query)))


def _image():
    torch.manual_seed(0)
    return torch.rand(1, 3, 67, 91)  # not square: the glyph is the centre square x 12..79


def _by_hand(model, x, target=None):
    """Every layer's attention from q and k written out, and d(logit)/d(attention)."""
    t = model.embed(x)
    attentions = []
    with torch.enable_grad():
        for block in model.blocks:
            xn = block.norm1(t)
            b, n, d = xn.shape
            h = block.attn.num_heads
            q, k, v = (p(xn).view(b, n, h, d // h).transpose(1, 2)
                       for p in (block.attn.q_proj, block.attn.k_proj, block.attn.v_proj))
            a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // h), -1)
            a.retain_grad()
            attentions.append(a)
            t = t + block.attn.out_proj((a @ v).transpose(1, 2).reshape(b, n, d))
            t = t + block.mlp(block.norm2(t))
        logits = model.head(model.norm(t[:, 0]))
        cls = int(logits.argmax()) if target is None else target
        logits[0, cls].backward()
    return logits.detach(), [a.detach() for a in attentions], [a.grad for a in attentions]


def test_shipped_vit_reaches_its_stated_accuracy_on_the_test_set(model):
    x, y, _ = test_set()
    with torch.no_grad():
        acc = float((model(x).argmax(1) == y).float().mean())
    stated = read_manifest()[WEIGHTS_PATH.name]["test_accuracy"]
    assert acc >= 0.95
    assert abs(acc - stated) <= 0.005  # the manifest was measured before the float16 rounding


def test_attention_from_a_clicked_patch_is_softmax_of_the_models_own_q_and_k(model):
    image = _image()
    result = _run({"attend_from": "clicked patch", "layer": 3, "head": "2"}, image, query=(50, 30))
    # the click (50, 30) in the 67 x 91 frame: the centre square starts at x = 12, side 67
    u, v = int((50 + 0.5 - 12) * SIZE / 67), int((30 + 0.5) * SIZE / 67)
    index = 1 + (v // 8) * 6 + u // 8
    assert result.layer("Metrics").values["query token"].startswith(f"{index}:")
    _, attentions, _ = _by_hand(model, from_image(image))
    expected = attentions[2][0, 1, index, 1:].reshape(6, 6)
    torch.testing.assert_close(torch.from_numpy(result.layer("Attention").maps), expected, atol=TOL, rtol=TOL)
    x0, y0, side, _ = result.layer("Attention").boxes[0]
    assert (x0, y0, side) == pytest.approx((12 + (u // 8) * 67 / 6, (v // 8) * 67 / 6, 67 / 6))


def test_class_token_rows_rollout_sums_to_one_and_head_mean(model):
    image = _image()
    result = _run({"layer": 4, "head": "mean"}, image)
    _, attentions, _ = _by_hand(model, from_image(image))
    torch.testing.assert_close(torch.from_numpy(result.layer("Attention").maps),
                               attentions[3][0, :, 0, 1:].mean(0).reshape(6, 6), atol=TOL, rtol=TOL)
    rollout = result.layer("Rollout").maps
    assert rollout.sum() + result.layer("Metrics").values["rollout on class token"] == pytest.approx(1.0, abs=1e-3)
    eye = torch.eye(37)
    r = eye
    for a in attentions:  # Abnar & Zuidema by hand: 0.5 A + 0.5 I, rows renormalized, later layers on the left
        hat = 0.5 * a[0].mean(0) + 0.5 * eye
        r = (hat / hat.sum(-1, keepdim=True)) @ r
    torch.testing.assert_close(torch.from_numpy(rollout), r[0, 1:].reshape(6, 6), atol=TOL, rtol=TOL)


def test_relevance_is_the_gradient_weighted_rollout_by_nested_loops(model):
    image = _image()
    result = _run({"target": "3"}, image)
    _, attentions, grads = _by_hand(model, from_image(image), target=3)
    n = attentions[0].shape[-1]
    r = [[float(i == j) for j in range(n)] for i in range(n)]
    for a, g in zip(attentions, grads):
        bar = (g[0].double() * a[0].double()).clamp(min=0).mean(0).tolist()
        r = [[r[i][j] + sum(bar[i][m] * r[m][j] for m in range(n)) for j in range(n)] for i in range(n)]
    expected = torch.tensor(r[0][1:], dtype=torch.float32).reshape(6, 6)
    torch.testing.assert_close(torch.from_numpy(result.layer("Relevance").maps), expected, atol=1e-4, rtol=1e-4)
    assert "class 3" in result.layer("Relevance").caption


def test_probabilities_sum_to_one_and_test_samples_are_read_as_drawn(model):
    x, y, _ = test_set()
    result = _run({"source": "test sample", "sample": 7}, _image())
    probs = result.layer("Class probabilities").series["p"]
    assert probs.sum() == pytest.approx(1.0, abs=1e-5)
    torch.testing.assert_close(torch.from_numpy(result.layer("Glyph").image), x[7, 0])
    assert result.layer("Metrics").values["true label"] == str(int(y[7]))
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(probs), torch.softmax(model(x[7:8]), 1)[0], atol=TOL, rtol=TOL)


def test_heads_grid_labels_every_layer_and_head_and_boxes_the_selection(model):
    result = _run({"layer": 2, "head": "3"}, _image())
    grid = result.layer("Heads by layer")
    assert grid.row_labels == ("layer 1", "layer 2", "layer 3", "layer 4")
    assert grid.column_labels == ("head 1", "head 2", "head 3", "head 4", "mean")
    tile = 6 * 6  # 6 tokens a side, 6 display pixels a token
    assert grid.image.shape == (4 * tile + 3 * 6, 5 * tile + 4 * 6)  # a one-token gap, scaled
    assert grid.boxes[0] == (2 * (tile + 6), 1 * (tile + 6), tile, tile)
