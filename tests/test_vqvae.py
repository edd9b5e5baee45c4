"""The VQ-VAE tokenizer: shipped weights load, tokenize any size, keep codebook perplexity and
reconstruction above bounds on a photo it never saw; the quantizer restarts dead codes; the
training script lowers its loss; the operator paints, keeps and clears token edits."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from backends.data.patches import sample_patches
from backends.imageio import load_image
from backends.models.vqvae import SHIPPED, VQVAE, EMAQuantizer, VQVAEConfig, load_vqvae, perplexity
from backends.models.weights import read_manifest
from backends.params import validate
from backends.training.vqvae import Trainer, main

# Bounds, measured after training (manifest): 512 fresh 32x32 crops of the training photos at an
# unseen seed use ~127 of 128 codes at perplexity ~101; crops of 'coffee', a photo training never
# sees, have fewer distinct textures: perplexity ~22, PSNR ~23.3 dB.
PERPLEXITY_BOUND = 80.0
HELD_OUT_PERPLEXITY_BOUND = 15.0
PSNR_BOUND = 21.0  # dB
HELD_OUT_SEED = 2_000_000_003


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    return load_vqvae()


def test_shipped_model_shapes(model):
    assert SHIPPED.stat().st_size < 2 * 2**20
    torch.manual_seed(0)
    x = torch.rand(2, 3, 36, 52)
    with torch.no_grad():
        tokens = model.encode(x)
        out = model.decode(tokens)
    assert tokens.shape == (2, 9, 13) and tokens.dtype == torch.int64
    assert int(tokens.max()) < model.codes
    assert out.shape == (2, 3, 36, 52) and 0 <= float(out.min()) and float(out.max()) <= 1
    with pytest.raises(ValueError, match="multiples of 4"):
        model.encode(torch.rand(1, 3, 30, 32))
    entry = read_manifest()[SHIPPED.name]
    for key in ("dataset", "steps", "seed", "final_losses", "metric", "sha256"):
        assert key in entry


def test_codebook_perplexity_on_fresh_crops(model):
    x, _ = sample_patches(512, HELD_OUT_SEED, 32, split="train")
    with torch.no_grad():
        ppl = perplexity(model.encode(x), model.codes)
    assert ppl > PERPLEXITY_BOUND, f"perplexity {ppl:.1f} of {model.codes} codes"


def test_heldout_photo_perplexity_and_reconstruction(model):
    x, _ = sample_patches(512, HELD_OUT_SEED, 32, split="test")
    with torch.no_grad():
        tokens = model.encode(x)
        mse = float((model.decode(tokens) - x).square().mean())
    ppl = perplexity(tokens, model.codes)
    psnr = 10 * np.log10(1 / mse)
    assert ppl > HELD_OUT_PERPLEXITY_BOUND, f"held-out perplexity {ppl:.1f}"
    assert psnr > PSNR_BOUND, f"held-out PSNR {psnr:.1f} dB"


def test_tokenizes_a_whole_photo(model):
    pixels = load_image("assets/images/chelsea.png").pixels  # 451 x 300
    x = torch.from_numpy(pixels).permute(2, 0, 1)[None, :, :296, :448].contiguous()
    with torch.no_grad():
        tokens = model.encode(x)
        mse = float((model.decode(tokens) - x).square().mean())
    assert tokens.shape == (1, 74, 112)
    assert perplexity(tokens, model.codes) > HELD_OUT_PERPLEXITY_BOUND
    assert 10 * np.log10(1 / mse) > 26  # ~29 dB measured


def test_perplexity_counts_effective_codes():
    assert perplexity(torch.arange(16), 16) == pytest.approx(16.0)
    assert perplexity(torch.zeros(10, dtype=torch.long), 16) == pytest.approx(1.0)


def test_dead_codes_are_restarted_on_encoder_outputs():
    torch.manual_seed(0)
    q = EMAQuantizer(8, 2, decay=0.9).train()
    q(torch.randn(4, 2, 4, 4) * 3.0)  # codes start spread out over a wide cloud
    q.restart_dead(torch.zeros(1, 2), min_usage=0.0)  # start a fresh usage window, restart nothing
    z = torch.randn(4, 2, 4, 4) * 0.01 + 5.0  # now every output is near one point: most codes go unused
    q(z)
    revived = q.restart_dead(z.permute(0, 2, 3, 1).reshape(-1, 2), min_usage=1.0)
    assert revived > 0
    assert float((q.embed - 5.0).abs().max()) < 0.5  # every code now sits near the outputs
    _, idx, commit = q(z)
    assert idx.shape == (4, 4, 4) and commit.ndim == 0


def test_straight_through_gradient_reaches_the_encoder():
    torch.manual_seed(0)
    model = VQVAE(VQVAEConfig(codes=16, code_dim=4, channels=16)).train()
    x = torch.rand(2, 3, 16, 16)
    out = model(x)
    out["loss"].backward()
    assert model.encoder[0].weight.grad is not None and float(model.encoder[0].weight.grad.abs().sum()) > 0


def test_trainer_lowers_the_loss():
    trainer = Trainer(codes=32, code_dim=8, batch=8, seed=1, restart_every=5, fixed_data=True)
    losses = [trainer.step()["mse"] for _ in range(25)]
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) and losses[-1] < 0.9 * losses[0]
    assert trainer.restarted > 0


def test_training_script_writes_weights_and_manifest(tmp_path):
    out = tmp_path / "vq.safetensors"
    assert main(["--steps", "2", "--batch", "4", "--codes", "16", "--out", str(out)]) == 0
    entry = json.loads((tmp_path / "manifest.json").read_text())["vq.safetensors"]
    assert entry["steps"] == 2 and "perplexity" in entry["metric"]["name"]
    assert load_vqvae(out).codes == 16


# -- the operator ------------------------------------------------------------------------------


def _op():
    from backends.ops.vqvae import VQVAETokenizer

    return VQVAETokenizer()


def _params(**values):
    from backends.ops.vqvae import VQVAETokenizer

    return validate(VQVAETokenizer.spec.params, values)


def test_operator_layers_and_frames():
    from backends.ops.vqvae import VQVAETokenizer

    image = torch.rand(1, 3, 90, 130, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        result = _op().compute(image, _params(size=128), None)
    assert set(result.names) == {"Reconstruction", "Error map", "Token map", "Codebook", "Codebook usage", "Metrics"}
    assert VQVAETokenizer.spec.primary == "Reconstruction"  # shown once, large
    token_map = result.layer("Token map")
    assert token_map.image.shape == (22, 32) and token_map.extent == (0.0, 0.0, 130.0, 90.0)  # on the input's frame
    assert result.layer("Reconstruction").extent == (0.0, 0.0, 130.0, 90.0)
    usage = result.layer("Codebook usage")
    this = np.asarray(usage.series["this image"])
    assert len(usage.labels) == 16 and all(label.startswith("code ") for label in usage.labels)
    assert (np.diff(this) <= 0).all()  # the most used first
    codebook = result.layer("Codebook")
    assert codebook.row_labels == tuple(str(16 * r) for r in range(8))
    assert codebook.column_labels == ("+0", "", "", "", "+4", "", "", "", "+8", "", "", "", "+12", "", "", "")


def test_token_map_is_categorical_with_the_most_used_codes_first():
    """The token map holds each token's rank among the codes the image uses (most used first, ties
    by code): its category names the token's code and its palette colour is that code's colour."""
    from backends.ops.vqvae import token_categories, token_palette

    tokens = torch.tensor([[5, 5, 9], [2, 9, 5]])
    out = token_categories(tokens, 16)
    assert out["categories"] == ("code 5", "code 9", "code 2")
    np.testing.assert_array_equal(out["image"], [[0, 0, 1], [2, 1, 0]])
    np.testing.assert_allclose(out["palette"], token_palette(16)[[5, 9, 2]])


def test_clicked_token_on_a_non_square_image(model):
    """130 x 90 at size 128 tokenizes a 128 x 88 image: 32 x 22 tokens of 130/32 x 90/22 input
    pixels. A click at (100, 20) is token (24, 4) (x = 100 * 32 / 130, y = 20 * 22 / 90; swapped
    axes would give another token), boxed in input pixels on the token map, whose category there
    names the code the tokenizer gives the resized image."""
    image = torch.rand(1, 3, 90, 130, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        result = _op().compute(image, _params(size=128), (100, 20))
        tokens = model.encode(F.interpolate(image, size=(88, 128), mode="area"))[0]
    code = int(tokens[4, 24])
    assert result.layer("Metrics").values["tokens"] == "32 x 22"
    assert result.layer("Metrics").values["query"] == f"token (24, 4) = code {code}"
    sx, sy = 130 / 32, 90 / 22
    token_map = result.layer("Token map")
    assert token_map.boxes == (pytest.approx((24 * sx, 4 * sy, sx, sy)),)  # radius 0: the token alone
    assert token_map.categories[int(token_map.image[4, 24])] == f"code {code}"
    decoded = [int(c.split()[1]) for c in np.asarray(token_map.categories)[np.asarray(token_map.image)].ravel()]
    assert decoded == tokens.flatten().tolist()


def test_codebook_frames_the_code_to_write():
    """Code 37 sits at row 37 // 16 = 2, column 37 % 16 = 5 of the codebook grid; its frame is drawn
    there and nowhere else."""
    from backends.imaging import grid_cell
    from backends.ops.vqvae import CODEBOOK_COLUMNS, CODEBOOK_SCALE, HIGHLIGHT

    with torch.no_grad():
        grid = _op().compute(torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(4)),
                            _params(size=64, replace_with=37), None).layer("Codebook").image
    x, y, w, h = grid_cell(37, CODEBOOK_COLUMNS, (16, 16), scale=CODEBOOK_SCALE)
    assert (x, y) == (5 * 17 * 2, 2 * 17 * 2)
    corners = [grid[y, x], grid[y + h - 1, x + w - 1]]
    for c in corners:
        np.testing.assert_allclose(np.asarray(c), HIGHLIGHT)
    framed = (torch.as_tensor(grid) == torch.tensor(HIGHLIGHT)).all(-1)
    assert framed[y: y + h, x: x + w].sum() == framed.sum()


def test_token_edits_are_painted_kept_and_cleared():
    from backends.ops.vqvae import paint_disc

    op = _op()
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        plain = op.compute(image, _params(size=64), None)
        # Click the token at (5, 6) (pixels 20..23, 24..27) and paint radius 1 with code 7.
        edited = op.compute(image, _params(size=64, replace_with=7, paint_radius=1), (22, 26))
        assert edited.layer("Metrics").values["edited tokens"] == len(paint_disc(np.zeros((16, 16)), 5, 6, 1)) == 5
        assert "code 7" in edited.layer("Metrics").values["query"]
        token_map = edited.layer("Token map")  # the painted disc is boxed as well as the token
        assert len(token_map.boxes) == 2 and token_map.boxes[1] == pytest.approx((16, 20, 12, 12))
        assert token_map.categories[int(token_map.image[6, 5])] == "code 7"
        assert float((edited.layer("Reconstruction").image - plain.layer("Reconstruction").image).abs().max()) > 0.01
        # Inspecting elsewhere keeps the edits.
        kept = op.compute(image, _params(size=64), (50, 50))
        assert kept.layer("Metrics").values["edited tokens"] == 5
        updates = list(op.start("clear_edits", image, _params(), None))
        assert "cleared 5" in updates[-1].message
        again = op.compute(image, _params(size=64), None)
    assert again.layer("Metrics").values["edited tokens"] == 0
    torch.testing.assert_close(again.layer("Reconstruction").image, plain.layer("Reconstruction").image)


def test_paint_disc_stays_inside_the_map():
    from backends.ops.vqvae import paint_disc

    assert paint_disc(np.zeros((4, 6)), 0, 0, 1) == [(0, 0), (0, 1), (1, 0)]
    assert len(paint_disc(np.zeros((9, 9)), 4, 4, 2)) == 13  # |dx|^2 + |dy|^2 <= 4.5


def test_edits_do_not_follow_a_new_image():
    op = _op()
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        op.compute(torch.rand(1, 3, 64, 64, generator=gen), _params(size=64, replace_with=3), (10, 10))
        other = op.compute(torch.rand(1, 3, 64, 64, generator=gen), _params(size=64), None)
    assert other.layer("Metrics").values["edited tokens"] == 0


def test_paint_radius_does_something_only_with_a_code_to_write():
    from backends.ops.vqvae import VQVAETokenizer
    from backends.params import is_active

    radius = next(p for p in VQVAETokenizer.spec.params if p.name == "paint_radius")
    assert not is_active(radius, _params())
    assert is_active(radius, _params(replace_with=0)) and is_active(radius, _params(replace_with=127))
