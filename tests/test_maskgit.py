"""Masked-token decoding: the schedule's counts are honoured round by round, every token is filled
by the last round, fixed tokens never change, inpainting leaves the unmasked tokens alone; the
shipped transformer loads and beats a unigram guess; training lowers the loss; the operator
scrubs steps from its cache and inpaints around a click."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from backends.models.maskgit import (
    SCHEDULES,
    SHIPPED,
    MaskGIT,
    MaskGITConfig,
    decode,
    gamma,
    load_maskgit,
    masked_counts,
)
from backends.models.weights import read_manifest
from backends.params import validate
from backends.training.maskgit import Trainer, mask_tokens

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def shipped():
    return load_maskgit()


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return MaskGIT(MaskGITConfig(codes=16, size=4, dim=16, layers=1, heads=2, mlp=32)).eval()


def test_schedules_go_from_all_to_none():
    for name in SCHEDULES:
        assert gamma(name, 0.0) == pytest.approx(1.0) and gamma(name, 1.0) == pytest.approx(0.0)
    with pytest.raises(ValueError):
        gamma("exponential", 0.5)


def test_masked_counts_follow_the_formula():
    # floor(64 * cos(pi/2 * t/8)) for t = 1..8, worked out by hand.
    assert masked_counts(64, 8, "cosine") == [62, 59, 53, 45, 35, 24, 12, 0]
    assert masked_counts(64, 8, "linear") == [56, 48, 40, 32, 24, 16, 8, 0]
    assert masked_counts(64, 4, "square") == [60, 48, 28, 0]
    # Few tokens, many rounds: each round still fixes at least one until none are left.
    assert masked_counts(3, 6, "cosine") == [2, 1, 0, 0, 0, 0]
    for name in SCHEDULES:
        for n, steps in ((64, 16), (16, 4), (1, 8)):
            counts = masked_counts(n, steps, name)
            assert counts[-1] == 0 and all(b <= a for a, b in zip([n] + counts, counts))
            expect = [min(math.floor(n * gamma(name, (t + 1) / steps) + 1e-9), n) for t in range(steps)]
            assert all(c <= e for c, e in zip(counts, expect))


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_decode_honours_counts_and_fills_every_token(tiny, schedule):
    tokens = torch.zeros((3, 4, 4), dtype=torch.long)
    mask = torch.ones((3, 4, 4), dtype=torch.bool)
    trace = decode(tiny, tokens, mask, steps=5, schedule=schedule, temperature=1.0, seed=1)
    counts = masked_counts(16, 5, schedule)
    assert trace.counts == counts
    for t in range(5):
        assert ((~trace.fixed[t]).reshape(3, -1).sum(1) == counts[t]).all()
        assert (trace.new[t].reshape(3, -1).sum(1) == (16 if t == 0 else counts[t - 1]) - counts[t]).all()
    assert trace.fixed[-1].all()
    assert (trace.final >= 0).all() and (trace.final < 16).all()
    # A token fixed in some round keeps its value in every later round.
    for t in range(4):
        kept = trace.fixed[t]
        assert (trace.tokens[t][kept] == trace.tokens[t + 1][kept]).all()


def test_decode_is_seeded(tiny):
    args = (torch.zeros((1, 4, 4), dtype=torch.long), torch.ones((1, 4, 4), dtype=torch.bool), 4, "cosine", 1.0)
    a, b, c = decode(tiny, *args, seed=5), decode(tiny, *args, seed=5), decode(tiny, *args, seed=6)
    assert (a.final == b.final).all() and not (a.tokens == c.tokens).all()


def test_inpainting_keeps_the_given_tokens(tiny):
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 16, (2, 4, 4), generator=gen)
    mask = torch.zeros((2, 4, 4), dtype=torch.bool)
    mask[:, 1:3, 1:3] = True
    trace = decode(tiny, tokens, mask, steps=4, schedule="linear", seed=0)
    assert (trace.final[~mask.numpy()] == tokens.numpy()[~mask.numpy()]).all()
    assert trace.counts == [3, 2, 1, 0]
    with pytest.raises(ValueError, match="same number"):
        mask[1, 0, 0] = True
        decode(tiny, tokens, mask, steps=4)


def test_shipped_model_loads_and_beats_a_unigram_guess(shipped):
    assert SHIPPED.stat().st_size < 2 * 2**20
    logits = shipped(torch.full((2, 8, 8), shipped.mask_id))
    assert logits.shape == (2, 8, 8, shipped.config.codes)
    metric = read_manifest()[SHIPPED.name]["metric"]
    assert metric["value"] < metric["heldout_unigram_ce"]
    with pytest.raises(ValueError, match="8x8"):
        shipped(torch.zeros((1, 4, 4), dtype=torch.long))


def test_mask_tokens_counts():
    gen = torch.Generator().manual_seed(0)
    m = mask_tokens(torch.zeros((3, 8, 8), dtype=torch.long), torch.tensor([0.0, 0.5, 1.0]), gen)
    assert m.reshape(3, -1).sum(1).tolist() == [1, 32, 64]


def test_trainer_lowers_the_loss():
    from backends.models.vqvae import load_vqvae

    trainer = Trainer(load_vqvae(), batch=8, steps=40, seed=2, warmup=2, fixed_data=True,
                      config=MaskGITConfig(dim=32, layers=1, heads=2, mlp=64))
    losses = [trainer.step()["loss"] for _ in range(25)]
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.3


# -- the operator ------------------------------------------------------------------------------


def _op():
    from backends.ops.maskgit import MaskedTokenGeneration

    return MaskedTokenGeneration()


def _params(**values):
    from backends.ops.maskgit import MaskedTokenGeneration

    return validate(MaskedTokenGeneration.spec.params, values)


# floor(64 * cos(pi/2 * t/8)) for t = 1..8, worked out by hand: tokens still masked after each round.
COSINE_64_IN_8 = [62, 59, 53, 45, 35, 24, 12, 0]


def test_operator_steps_follow_the_schedule_and_scrub_from_cache():
    """Every round's panels: 'still masked' and the masked (0) cells of the token-state map equal
    the cosine schedule worked out by hand, the new (2) cells the tokens kept in that round. The
    panels keep their names while scrubbing; scrubbing decodes nothing again: the strip of all
    rounds and the output are the very same objects, and the shown round is framed on the strip."""
    from backends.imaging import grid_cell
    from backends.ops.maskgit import STATES

    op = _op()
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        results = [op.compute(image, _params(steps=8, show_step=t), None) for t in range(1, 9)]
    first, last = results[0], results[-1]
    assert first.names == last.names and "Output" in first.names
    previous = 64
    for t, (result, left) in enumerate(zip(results, COSINE_64_IN_8), start=1):
        states = result.layer("Token states")
        assert states.categories == STATES == ("masked", "kept", "new this round")
        state = np.asarray(states.image)
        assert result.layer("Metrics").values["still masked"] == left == int((state == 0).sum())
        assert result.layer("Metrics").values["fixed this round"] == previous - left == int((state == 2).sum())
        assert int((state == 1).sum()) == 64 - previous
        strip = result.layer("All steps")
        assert strip.image is first.layer("All steps").image and result.layer("Output") is first.layer("Output")
        x, _, w, _ = grid_cell(t - 1, 8, (32, 32), scale=2)
        assert strip.boxes == ((x, 0.0, w, strip.image.shape[0]),)
        assert f"round {t} of 8" in result.layer("Confidence").caption
        previous = left
    assert last.layer("All steps").column_labels == tuple("12345678")
    schedule = last.layer("Schedule").series["cosine"][1]
    assert schedule.tolist() == [64] + COSINE_64_IN_8


def test_confidence_panels_read_the_trace():
    """The confidence map of round t is the sampled token's probability in % where the round
    sampled (NaN, drawn blank, where a token was kept before), coloured from 0 to the largest of
    any round rounded up to 5 %; the per-round curve of kept tokens averages that map over the
    tokens the round kept."""
    op = _op()
    with torch.no_grad():
        rounds = [op.compute(torch.zeros(1, 3, 32, 32), _params(steps=4, show_step=t), None) for t in (1, 2, 3, 4)]
    result = rounds[1]
    conf = np.asarray(result.layer("Confidence").maps)
    states = np.asarray(result.layer("Token states").image)
    before = np.asarray(rounds[0].layer("Token states").image) > 0
    assert np.isnan(conf[before]).all() and not np.isnan(conf[~before]).any()
    assert ((conf[~before] >= 0) & (conf[~before] <= 100)).all()
    top = max(float(np.nanmax(np.asarray(r.layer("Confidence").maps))) for r in rounds)
    low, high = result.layer("Confidence").levels
    assert low == 0 and high % 5 == 0 and high - 5 < top <= high
    framed = {(int(x), int(y)) for x, y, w, h in result.layer("Confidence").boxes}
    assert framed == {(int(x), int(y)) for y, x in zip(*np.nonzero(states == 2))}  # (x, y): column first
    steps, kept = result.layer("Confidence per round").series["kept tokens"]
    assert steps.tolist() == [1, 2, 3, 4]
    assert kept[1] == pytest.approx(float(conf[states == 2].mean()), rel=1e-5)


def test_box_and_size_do_something_only_when_inpainting():
    from backends.ops.maskgit import MaskedTokenGeneration
    from backends.params import is_active

    specs = {p.name: p for p in MaskedTokenGeneration.spec.params}
    for name in ("box", "size"):
        assert not is_active(specs[name], _params()) and is_active(specs[name], _params(mode="inpaint input"))


def test_operator_inpaints_around_the_click():
    """128 x 96 at size 128 is 32 x 24 tokens of 4 px; a click at (64, 48) is token (16, 12): the
    8 x 8 window starts at token (12, 8), the 3 x 3 box at token (15, 11)."""
    op = _op()
    image = torch.rand(1, 3, 96, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        result = op.compute(image, _params(mode="inpaint input", size=128, box=3, steps=4, show_step=4), (64, 48))
    assert "Inpainting window" in result.names
    output = result.layer("Output")
    assert output.image.shape == (96, 128, 3) and output.extent == (0.0, 0.0, 128.0, 96.0)
    window, box = output.boxes
    assert window == pytest.approx((48.0, 32.0, 32.0, 32.0))
    assert box == pytest.approx((60.0, 44.0, 12.0, 12.0))
    order = result.layer("Decoding order").maps
    assert int((order > 0).sum()) == 9  # only the 3x3 box is generated
    assert (np.asarray(order)[3:6, 3:6] > 0).all()
    states = np.asarray(result.layer("Token states").image)
    inside = np.zeros((8, 8), bool)
    inside[3:6, 3:6] = True
    assert (states[~inside] == 1).all()  # the given tokens count as kept
    assert (states[inside] != 0).all() and (states[inside] == 2).any()  # the last round leaves none masked


def test_inpainting_window_on_a_non_square_image():
    """160 x 64 at size 160: 40 x 16 tokens, sx = sy = 1. A click at (150, 10), token (37, 2), puts
    the window against the right and top edges (tokens 32..39, 0..7) and the box around the click
    inside it: swapped axes would clamp differently."""
    op = _op()
    image = torch.rand(1, 3, 64, 160, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        result = op.compute(image, _params(mode="inpaint input", size=160, box=2, steps=4), (150, 10))
    window, box = result.layer("Output").boxes
    assert window == pytest.approx((128.0, 0.0, 32.0, 32.0))
    assert box == pytest.approx((144.0, 4.0, 8.0, 8.0))
