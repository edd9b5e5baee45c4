"""The saliency sampling operator through compute: its layers and metrics, and what its panels
DRAW against computations written out here: a uniform saliency's grid is the plain resize's lattice
and its output a plain bilinear resize (magnification 1); a clicked point is magnified most where a
plain resize puts it (non-square image, asymmetric click); the corners of the warped output read
the input where the drawn grid says; the border pull without the extended border; the uniform
downsampling's reconstruction error is the plain upsampling's, and the bars are the maps' RMS.
The cores are tested in test_functional_saliency_sampling.py."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from backends.layers import complete
from backends.ops.saliency_sampling import SaliencySampling
from backends.params import is_active, validate

H, W = 96, 160  # non-square
QUERY = (118, 30)  # right of centre, above it
FLOAT_TOL = 1e-4  # float32 panels against float64 arithmetic here


def _image() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    coarse = F.interpolate(torch.rand(1, 3, H // 8, W // 8, generator=g), size=(H, W), mode="bilinear", align_corners=False)
    return coarse.clamp(0, 1)


def _compute(image=None, query=QUERY, **values):
    with torch.no_grad():  # as the worker runs it; complete: the downsampling panels settle
        return complete(SaliencySampling().compute(_image() if image is None else image,
                                                   validate(SaliencySampling.spec.params, values), query))


def test_operator_returns_named_layers_and_metrics():
    result = _compute()
    assert result.names == ("Warped output", "Sampling grid", "Saliency", "Magnification", "Downsampled",
                            "Reconstruction error", "Error by region", "Metrics")
    metrics = result.layer("Metrics").values
    assert metrics["output size"] == "160 x 96"  # a long side of 192 asked: never above the input's
    assert {"saliency ms", "grid ms", "warp ms", "downsampling ms"} <= set(metrics)


def test_uniform_saliency_draws_the_plain_resize_lattice_and_resizes_plainly():
    result = _compute(source="uniform", output_size=64)
    grid = np.asarray(result.layer("Sampling grid").grid, np.float64)
    oh, ow = 38, 64  # 96 x 160 to a long side of 64
    cols = (grid[..., 0] + 0.5) * ow / W - 0.5  # the output column each drawn sample belongs to
    rows = (grid[..., 1] + 0.5) * oh / H - 0.5
    np.testing.assert_allclose(cols, np.round(cols), atol=FLOAT_TOL)
    np.testing.assert_allclose(rows, np.round(rows), atol=FLOAT_TOL)
    assert cols[0, 0] == pytest.approx(0, abs=FLOAT_TOL) and cols[0, -1] == pytest.approx(ow - 1, abs=FLOAT_TOL)
    assert rows[0, 0] == pytest.approx(0, abs=FLOAT_TOL) and rows[-1, 0] == pytest.approx(oh - 1, abs=FLOAT_TOL)
    assert np.ptp(rows, axis=1).max() < FLOAT_TOL and np.ptp(cols, axis=0).max() < FLOAT_TOL  # straight lines
    out = np.asarray(result.layer("Warped output").image)
    plain = F.interpolate(_image(), size=(oh, ow), mode="bilinear", align_corners=False)[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(out, plain, atol=FLOAT_TOL)
    np.testing.assert_allclose(np.asarray(result.layer("Magnification").image), 1.0, atol=1e-3)


def test_the_clicked_point_is_magnified_most_where_a_plain_resize_puts_it():
    result = _compute(source="point", strength=20.0, spread=0.08, kernel_width=0.12, output_size=160)
    zoom = np.asarray(result.layer("Magnification").image)
    assert zoom.shape == (96, 160) and zoom.max() > 1.5
    row, col = divmod(int(zoom.argmax()), zoom.shape[1])
    assert abs(col - QUERY[0]) <= 2 and abs(row - QUERY[1]) <= 2  # output = input size: the click's own pixel
    far = zoom[80:, :20]
    assert far.max() < zoom.max() / 1.5


def _bilinear(image: torch.Tensor, x: float, y: float) -> np.ndarray:
    """The image (1, 3, H, W) at (x, y), coordinates clamped to the pixel centres (border padding)."""
    x, y = min(max(x, 0.0), W - 1.0), min(max(y, 0.0), H - 1.0)
    x0, y0 = min(int(math.floor(x)), W - 2), min(int(math.floor(y)), H - 2)
    fx, fy = x - x0, y - y0
    im = image[0].double()
    v = (1 - fy) * ((1 - fx) * im[:, y0, x0] + fx * im[:, y0, x0 + 1]) + fy * ((1 - fx) * im[:, y0 + 1, x0] + fx * im[:, y0 + 1, x0 + 1])
    return v.numpy()


def test_the_warped_corners_read_the_input_where_the_drawn_grid_says():
    result = _compute(source="edges", strength=15.0)
    grid = np.asarray(result.layer("Sampling grid").grid, np.float64)
    out = np.asarray(result.layer("Warped output").image)
    for (gi, gj), (oi, oj) in (((0, 0), (0, 0)), ((-1, -1), (-1, -1)), ((0, -1), (0, -1)), ((-1, 0), (-1, 0))):
        x, y = grid[gi, gj]
        np.testing.assert_allclose(out[oi, oj], _bilinear(_image(), x, y), atol=FLOAT_TOL)


def test_without_the_extended_border_the_samples_are_pulled_inward():
    on = np.asarray(_compute(source="uniform").layer("Sampling grid").grid, np.float64)
    off = np.asarray(_compute(source="uniform", extend_border=False).layer("Sampling grid").grid, np.float64)
    assert off[0, 0, 0] > on[0, 0, 0] + 1 and off[0, 0, 1] > on[0, 0, 1] + 1
    assert off[-1, -1, 0] < on[-1, -1, 0] - 1 and off[-1, -1, 1] < on[-1, -1, 1] - 1
    mid_r, mid_c = on.shape[0] // 2, on.shape[1] // 2
    np.testing.assert_allclose(off[mid_r, mid_c], on[mid_r, mid_c], atol=0.05)


def test_uniform_downsampling_error_is_plain_bilinear_upsampling_and_the_bars_are_its_rms():
    f = 4
    result = _compute(downsample=f, strength=10.0)
    errors = np.asarray(result.layer("Reconstruction error").maps)
    low = F.interpolate(_image(), size=(H // f, W // f), mode="bilinear", align_corners=False)
    back = F.interpolate(low, size=(H, W), mode="bilinear", align_corners=False)
    expected = (back - _image()).abs().mean(1)[0].numpy()
    inner = (slice(2 * f, -2 * f), slice(2 * f, -2 * f))
    np.testing.assert_allclose(errors[0][inner], expected[inner], atol=2e-3)
    bars = result.layer("Error by region")
    assert bars.labels == ("uniform", "denser near edges")
    rms = [float(np.sqrt((e.astype(np.float64) ** 2).mean())) * 255 for e in errors]
    np.testing.assert_allclose(bars.series["whole image"], rms, rtol=1e-4)


def test_downsampling_denser_near_edges_reconstructs_a_disc_better_near_its_rim():
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    disc = (((xs - 90) ** 2 + (ys - 50) ** 2).sqrt() < 30).float()
    image = (0.1 + 0.8 * disc).expand(1, 3, H, W).contiguous()
    bars = _compute(image, downsample=8, strength=20.0).layer("Error by region").series
    uniform, edges = bars["near edges"]
    assert edges < 0.9 * uniform and bars["whole image"][1] < bars["whole image"][0]


def test_a_strength_change_brings_the_zoom_first_and_the_downsampling_when_it_settles():
    op, image = SaliencySampling(), _image()
    with torch.no_grad():
        first = op.compute(image, validate(SaliencySampling.spec.params, {"strength": 5.0}), QUERY)
        assert first.pending == ("Downsampled", "Reconstruction error", "Error by region")
        assert "Warped output" in first.names and "Downsampled" not in first.names
        assert "Downsampled" in complete(first).names
        again = op.compute(image, validate(SaliencySampling.spec.params, {"strength": 5.0, "output_size": 64}), QUERY)
    assert again.settle is None and "Downsampled" in again.names  # cached: all at once


def test_parameters_say_when_they_act():
    specs = {p.name: p for p in SaliencySampling.spec.params}
    uniform = validate(SaliencySampling.spec.params, {"source": "uniform"})
    edges = validate(SaliencySampling.spec.params, {"source": "edges"})
    assert not is_active(specs["strength"], uniform) and is_active(specs["strength"], edges)
    assert not is_active(specs["spread"], edges) and is_active(specs["spread"], {**edges, "source": "point"})
