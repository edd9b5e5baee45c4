"""Model lab capture: layer outputs and Grad-CAM through TorchScript and torch.export match the
eager model (1e-5); attention captured from fused scaled_dot_product_attention, multi-head
attention and a qkv projection equals softmax(q k^T * scale) computed here in float64 (1e-5);
an attention module that cannot be captured gives a warning; deformable sampling points equal
the positions deform_conv2d reads (1e-4); rollout rows sum to 1; timm models when installed."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from backends.functional.attention import attention_rollout
from backends.functional.deformable import DeformConv2d, deform_conv2d
from backends.lab.capture import capture, grad_cam_at
from backends.lab.deform_capture import sampling_points
from backends.lab.loading import LoadedModel, ModelSource, load_model

TOL = 1e-5

pytestmark = pytest.mark.usefixtures("one_thread")


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.block = nn.Sequential(nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.ReLU())
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        return self.fc(self.block(F.relu(self.conv1(x))).mean((2, 3)))


def eager(model):
    return LoadedModel(model.eval(), ModelSource("python", "test.py"))


def hand_grad_cam(model, x, layer, k):
    """Grad-CAM written out: the layer's output kept with retain_grad, the class score's backward."""
    held = {}
    h = layer.register_forward_hook(lambda m, a, o: held.setdefault("a", o))
    with torch.enable_grad():
        out = model(x)
        held["a"].retain_grad()
        out[0, k].backward()
    h.remove()
    a, g = held["a"].detach()[0], held["a"].grad[0]
    return torch.relu((g.mean((1, 2))[:, None, None] * a).sum(0))


@pytest.fixture
def cnn():
    torch.manual_seed(0)
    return SmallCNN().eval(), torch.rand(1, 3, 10, 14)


def test_scripted_cnn_round_trip_gives_the_eager_layers_and_grad_cam(cnn, tmp_path):
    model, x = cnn
    torch.jit.save(torch.jit.script(model), tmp_path / "m.pt")
    loaded = load_model(ModelSource.for_file(str(tmp_path / "m.pt")))
    assert loaded.scripted
    cap, ref = capture(loaded, x), capture(eager(model), x)
    assert {li.path: li.shape for li in cap.layers} == {li.path: li.shape for li in ref.layers if li.path}
    assert torch.allclose(cap.outputs["block.0"], model.block[0](F.relu(model.conv1(x))), atol=TOL)
    assert cap.proposals()["grad_cam"] == "block.0"  # the last convolution
    k = int(model(x).argmax())
    cam = grad_cam_at(loaded, x, "block.0")
    assert cam.class_index == k and cam.cam.shape == (5, 7)
    maxima = []
    for c in range(5):  # every class, so that a map with positive evidence is among them
        cam = grad_cam_at(loaded, x, "block.0", class_index=c)
        assert torch.allclose(cam.cam, hand_grad_cam(model, x, model.block[0], c), atol=TOL)
        maxima.append(float(cam.cam.max()))
    assert max(maxima) > 0


def test_export_archive_round_trip(cnn, tmp_path):
    model, x = cnn
    torch.export.save(torch.export.export(model, (x,)), tmp_path / "m.pt2")
    loaded = load_model(ModelSource.for_file(str(tmp_path / "m.pt2")))
    assert loaded.input_size == (10, 14)
    cap = capture(loaded, x)
    assert torch.allclose(cap.scores, model(x), atol=TOL)
    assert cap.outputs["conv1"].shape == (1, 6, 10, 14)
    assert cap.proposals()["grad_cam"] == "block.0"
    cam = grad_cam_at(loaded, x, "block.0", class_index=2)
    assert torch.allclose(cam.cam, hand_grad_cam(model, x, model.block[0], 2), atol=TOL)


class FusedAttention(nn.Module):
    """Calls the fused kernel: no weights ever exist inside it."""

    def __init__(self, dim=8, heads=2):
        super().__init__()
        self.heads, self.q, self.k, self.v = heads, nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)

    def split(self, t):
        b, n, c = t.shape
        return t.reshape(b, n, self.heads, c // self.heads).transpose(1, 2)

    def forward(self, x, mask=None):
        out = F.scaled_dot_product_attention(self.split(self.q(x)), self.split(self.k(x)), self.split(self.v(x)),
                                             attn_mask=mask, scale=0.7)
        return out.transpose(1, 2).reshape(x.shape)


def hand_weights(q_lin, k_lin, x, heads, scale, bias=None):
    x = x.double()
    q = (x @ q_lin.weight.double().T + q_lin.bias.double())
    k = (x @ k_lin.weight.double().T + k_lin.bias.double())
    b, n, c = q.shape
    q, k = (t.reshape(b, n, heads, c // heads).transpose(1, 2) for t in (q, k))
    logits = torch.einsum("bhid,bhjd->bhij", q, k) * scale
    if bias is not None:
        logits = logits + bias.double()
    return torch.softmax(logits, -1)


def test_fused_attention_is_captured_from_q_and_k():
    torch.manual_seed(1)
    block = FusedAttention().eval()
    x = torch.randn(1, 5, 8)
    bias = torch.randn(5, 5)  # not symmetric: a transposed capture would differ

    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = block

        def forward(self, t):
            return self.attn(t, bias).sum(1)

    cap = capture(eager(Wrap()), x)
    want = hand_weights(block.q, block.k, x, 2, 0.7, bias)
    got = cap.attention["attn"]
    assert got.shape == (1, 2, 5, 5)
    assert (got.double() - want).abs().max() < TOL
    assert "fused" in cap.attention_how["attn"] and not cap.warnings


def test_multi_head_attention_in_an_encoder_layer_is_captured():
    torch.manual_seed(2)
    enc = nn.TransformerEncoderLayer(8, 2, 16, batch_first=True, dropout=0.0).eval()
    x = torch.randn(1, 6, 8)
    cap = capture(eager(enc), x)
    w = cap.attention["self_attn"]
    _, want = enc.self_attn(x, x, x, need_weights=True, average_attn_weights=False)
    assert w.shape == (1, 2, 6, 6) and torch.allclose(w, want, atol=TOL)
    assert torch.allclose(cap.scores, enc(x)[:1].reshape(1, -1), atol=TOL)  # the forward's answer is unchanged


class EagerQKV(nn.Module):
    """A ViT block in the eager style: one qkv projection, weights formed by hand."""

    def __init__(self, dim=8, heads=2):
        super().__init__()
        self.num_heads, self.qkv, self.scale = heads, nn.Linear(dim, 3 * dim), 0.4

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        attn = torch.softmax(q @ k.transpose(-2, -1) * self.scale, -1)
        return (attn @ v).transpose(1, 2).reshape(b, n, c)


def test_a_qkv_block_that_forms_weights_by_hand_is_read_from_its_projection():
    torch.manual_seed(3)
    block = EagerQKV().eval()
    x = torch.randn(1, 5, 8)
    cap = capture(eager(block), x)
    w = block.qkv.weight.double()
    qw, kw = w[:8], w[8:16]
    ql, kl = nn.Linear(8, 8).double(), nn.Linear(8, 8).double()
    with torch.no_grad():
        ql.weight.copy_(qw), ql.bias.copy_(block.qkv.bias[:8]), kl.weight.copy_(kw), kl.bias.copy_(block.qkv.bias[8:16])
    want = hand_weights(ql, kl, x, 2, 0.4)
    assert (cap.attention[""].double() - want).abs().max() < TOL


class OpaqueAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(8, 8))

    def forward(self, x):
        return torch.softmax(x @ self.w @ x.transpose(-2, -1), -1) @ x


def test_attention_that_cannot_be_captured_warns_instead_of_an_empty_map():
    cap = capture(eager(OpaqueAttention()), torch.randn(1, 4, 8))
    assert not cap.attention
    assert any("could not be captured" in w and "OpaqueAttention" in w for w in cap.warnings)


def test_rollout_of_captured_attention_rows_sum_to_one():
    torch.manual_seed(4)
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, batch_first=True, dropout=0.0), 3).eval()
    cap = capture(eager(enc), torch.randn(1, 10, 8))
    assert len(cap.attention) == 3
    roll = attention_rollout([w[0].mean(0).double() for w in cap.attention.values()])
    assert torch.allclose(roll.sum(-1), torch.ones(10, dtype=torch.float64), atol=1e-12)


class DeformNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.deform = DeformConv2d(2, 1, 3, stride=2, padding=1, dilation=1)
        self.off = None

    def forward(self, x):
        return self.deform(x, self.off[0], mask=self.off[1]).mean((2, 3))


def test_drawn_sampling_points_are_where_deform_conv2d_reads():
    """Input channels are the x and y pixel coordinates (bilinear reads them exactly inside the
    image); a weight picking one tap makes deform_conv2d return where that tap read."""
    torch.manual_seed(5)
    h, w = 12, 17
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    ramp = torch.stack([xs, ys])[None]
    net = DeformNet().double()
    offset = (torch.rand(1, 18, 6, 9, dtype=torch.float64) - 0.5) * 1.6
    mask = torch.rand(1, 9, 6, 9, dtype=torch.float64)
    net.off = (offset, mask)
    cap = capture(eager(net), ramp)
    sample = cap.deform["deform"]
    assert sample.groups == 1 and sample.in_hw == (h, w)
    oy, ox = 3, 5  # interior, non-symmetric
    regular, deformed, got_mask = sampling_points(sample, oy, ox)
    assert torch.allclose(got_mask, mask[0, :, oy, ox])
    for tap in range(9):
        pick = torch.zeros(2, 2, 3, 3, dtype=torch.float64)
        pick[0, 0].view(-1)[tap] = 1.0  # output 0 reads channel x at this tap
        pick[1, 1].view(-1)[tap] = 1.0  # output 1 reads channel y
        read = deform_conv2d(ramp, offset, pick, stride=2, padding=1)[0, :, oy, ox]
        assert torch.allclose(read, deformed[tap], atol=1e-4), (tap, read, deformed[tap])
    assert torch.allclose(regular[4], torch.tensor([2.0 * ox, 2.0 * oy], dtype=torch.float64))  # centre tap


def test_timm_models_are_captured_when_timm_is_installed():
    timm = pytest.importorskip("timm")
    vit = LoadedModel(timm.create_model("vit_tiny_patch16_224", pretrained=False).eval(),
                      ModelSource("timm", name="vit_tiny_patch16_224"))
    x = torch.rand(1, 3, 224, 224)
    cap = capture(vit, x)
    assert len(cap.attention) == 12 and all(w.shape == (1, 3, 197, 197) for w in cap.attention.values())
    assert not cap.warnings
    assert cap.proposals()["grad_cam"].endswith("norm1")
    assert grad_cam_at(vit, x, cap.proposals()["grad_cam"]).cam.shape == (14, 14)
    res = LoadedModel(timm.create_model("resnet18", pretrained=False).eval(), ModelSource("timm", name="resnet18"))
    rcap = capture(res, x)
    assert rcap.proposals()["grad_cam"] == "layer4.1.conv2"
    assert grad_cam_at(res, x, "layer4.1.conv2").cam.shape == (7, 7)
    assert math.isclose(float(torch.softmax(rcap.scores, 1).sum()), 1.0, rel_tol=1e-5)
