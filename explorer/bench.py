"""Slider-to-frame benchmark: drives the real window offscreen and reports latency, compute and
render time, UI-thread stalls, start-up time, and a matplotlib redraw loop for comparison.

Run: ``make bench`` or ``QT_QPA_PLATFORM=offscreen python -m explorer.bench [--ops a,b] [--changes N]``.
Numbers, not assertions: this is not a test. Results go in docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("OPSCOPE_CONFIG_DIR", "/tmp/opscope-bench-config")

# Which parameter each operator's sweep moves, and through which values (cycled).
SWEEPS: dict[str, tuple[str, list]] = {
    "dilated": ("dilation", list(range(1, 17)) + list(range(15, 1, -1))),
    "deformable": ("strength", [round(0.1 * i, 2) for i in range(1, 11)]),
    "spatial_transformer": ("rotate", list(range(-40, 41, 5))),
    "squeeze_excitation": ("reduction", [2, 4, 8, 16]),
    "self_attention": ("temperature", [round(0.2 + 0.1 * i, 2) for i in range(15)]),
    "vae": ("z0", [round(-3 + 0.25 * i, 2) for i in range(25)]),
    "stylegan": ("smile", [round(-3 + 0.25 * i, 2) for i in range(25)]),
    "conv_family": ("multiplier", [1, 2, 3, 4, 3, 2, 1]),
    "upsampling": ("kernel_size", [1, 2, 3, 4, 5, 6, 7, 6, 5, 4, 3, 2]),
    "reparam": ("mean_scale", [round(0.1 * i, 2) for i in range(21)]),
    "deformable_kernels": ("strength", [round(-2 + 0.2 * i, 2) for i in range(21)]),
    "aliasing": ("shift_x", [round(0.05 * i, 2) for i in range(21)]),
    "feature_statistics": ("strength", [round(0.1 * i, 1) for i in range(11)]),
    "position_embeddings": ("base_log10", [round(1 + 0.25 * i, 2) for i in range(21)]),
    "efficient_attention": ("temperature", [round(0.5 + 0.25 * i, 2) for i in range(15)]),
    "tricks": ("mu", [round(-1.5 + 0.25 * i, 2) for i in range(13)]),
    "saliency_sampling": ("strength", [float(2 * i) for i in range(1, 21)]),
    "optical_flow": ("shift_x", [float(v) for v in range(-12, 13, 2)]),
    "lab_mtcnn": ("onet_threshold", [round(0.5 + 0.05 * i, 2) for i in range(10)]),
    "lab_shape_texture": ("seed", list(range(12))),
    "lab_se_resnet": ("target", list("0123456789")),
    "lab_stn": ("sample", list(range(0, 40, 3))),  # with the test set as source (SETUP)
    "lab_deformable": ("sample", list(range(0, 40, 3))),
    "lab_vit": ("layer", [1, 2, 3, 4, 3, 2]),
    "lab_user_model": ("cam_class", [-1, *range(10)]),
}
# Values set before an operator's sweep, where its swept parameter acts only in another mode
# (until 2026-12-01 the glyph labs' sweeps moved a sample while reading the image: no new input).
SETUP: dict[str, dict] = {"lab_stn": {"source": "test sample"}, "lab_deformable": {"source": "test sample"}}
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Sample:
    latency_ms: float
    compute_ms: float
    render_ms: float
    settling: bool = False  # the frame left panels to settle once the parameters rest


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def bench_operator(app, op: str, changes: int) -> tuple[list[Sample], list[float]]:
    from PySide6 import QtCore, QtWidgets

    window, session = app.window, app.session
    failures: list[str] = []
    window.frameFailed.connect(failures.append)
    session.set_operator(op)
    for setting, value in SETUP.get(op, {}).items():
        _set(window.form.rows[setting], value)
    _wait(window, failures=failures, settled=True)  # every panel made before the sweep
    if failures:
        print(f"| {op} | skipped: {failures[0]} |")
        return [], []
    name, values = SWEEPS[op]
    spec_names = {p.name for p in window.form.rows.values() for p in [p.spec]}
    if name not in spec_names:
        return [], []
    row = window.form.rows[name]
    stalls: list[float] = []
    last = [time.perf_counter()]
    interval_ms = 2

    def beat() -> None:
        now = time.perf_counter()
        stalls.append(max(0.0, (now - last[0]) * 1e3 - interval_ms))
        last[0] = now

    timer = QtCore.QTimer()
    timer.setInterval(interval_ms)
    timer.timeout.connect(beat)
    timer.start()
    samples = []
    for i in range(changes):
        value = values[i % len(values)]
        if session.params()[name] == value:
            value = values[(i + 1) % len(values)]
        t0 = time.perf_counter()
        _set(row, value)
        _wait(window)
        t_frame = time.perf_counter()
        QtWidgets.QApplication.processEvents()  # paint
        t1 = time.perf_counter()
        paint_ms = (t1 - t_frame) * 1e3
        samples.append(Sample((t1 - t0) * 1e3, app.scheduler.last_compute_ms, window.last_apply_ms + paint_ms,
                              app.scheduler.settling))
    timer.stop()
    return samples, stalls[5:]


def settled_latencies(app, op: str, changes: int) -> list[float]:
    """From a parameter change to the frame with every panel, the settling ones included, when
    the user lets go after each change (so the settle delay is part of the figure)."""
    from PySide6 import QtWidgets

    window, session = app.window, app.session
    name, values = SWEEPS[op]
    row = window.form.rows[name]
    out = []
    for i in range(changes):
        value = values[(i * 3 + 1) % len(values)]
        if session.params()[name] == value:
            value = values[(i * 3 + 2) % len(values)]
        t0 = time.perf_counter()
        _set(row, value)
        _wait(window, settled=True)
        QtWidgets.QApplication.processEvents()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def _set(row, value) -> None:
    """Moves one form row as the user would: a spin box (numbers, seeds) or a choice."""
    if row.spec.kind in ("int", "float", "seed"):
        row.spin.setValue(value)
    elif row.spec.kind == "choice":
        row.combo.setCurrentText(str(value))


def _wait(window, timeout_s: float = 60, failures: Optional[list] = None, settled: bool = False) -> None:
    """Until the newest request's first frame is applied, or with ``settled`` its complete one.
    Blocks in an event loop, as the app's own does, woken by the frame: polling would add up to
    a poll interval to every signal that crosses from the worker (two per frame)."""
    from PySide6 import QtCore

    def done() -> bool:
        return bool(failures) or (window.scheduler.frame_settled() if settled else window.scheduler.frame_drawn())

    if done():
        return
    loop = QtCore.QEventLoop()

    def check(*_args) -> None:
        if done():
            loop.quit()

    window.frameApplied.connect(check)
    window.frameFailed.connect(check)
    deadline = QtCore.QTimer(singleShot=True, interval=int(timeout_s * 1000))
    deadline.timeout.connect(loop.quit)
    deadline.start()
    check()
    if not done():
        loop.exec()
    deadline.stop()
    window.frameApplied.disconnect(check)
    window.frameFailed.disconnect(check)


def matplotlib_loop(op: str, image: np.ndarray, changes: int) -> float:
    """Frames per second of what a notebook user would do: compute, then redraw every panel of
    the same result (images, mosaics, arrows, grids, points, bars, curves, metrics) with pyplot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from backends.layers import complete, materialize
    from backends.registry import operator_class, validated_params

    name, values = SWEEPS[op]
    tensor = torch.from_numpy(image).permute(2, 0, 1)[None].contiguous()
    operator = operator_class(op)()
    fig = plt.figure(figsize=(16, 10), dpi=100)
    times = []
    for i in range(changes):
        t0 = time.perf_counter()
        params = validated_params(op, {**SETUP.get(op, {}), name: values[i % len(values)]})
        with torch.no_grad():
            result = materialize(complete(operator.compute(tensor, params, None)))
        fig.clf()
        n = len(result.layers)
        cols = 3
        rows = -(-n // cols)
        for k, layer in enumerate(result.layers):
            _draw_layer(fig.add_subplot(rows, cols, k + 1), layer, image)
        fig.canvas.draw()
        times.append(time.perf_counter() - t0)
    plt.close(fig)
    gc.collect()  # its figures' garbage would otherwise be collected during the next operator's sweep
    return 1.0 / float(np.median(times))


def _draw_layer(ax, layer, image: np.ndarray) -> None:
    from widgets.mosaic import tile

    ax.set_title(layer.name, fontsize=8)
    from backends.layers import (
        INPUT,
        BarsLayer,
        CurveLayer,
        FeatureMapsLayer,
        HeatmapLayer,
        ImageLayer,
        MetricsLayer,
        PointsLayer,
        SamplingGridLayer,
        VectorFieldLayer,
    )

    bg = getattr(layer, "background", None)
    bg = image if bg is INPUT else bg
    if isinstance(layer, ImageLayer):
        ax.imshow(np.clip(layer.image, 0, 1) if layer.image.ndim == 3 else layer.image, cmap="viridis")
    elif isinstance(layer, (FeatureMapsLayer, HeatmapLayer)):
        maps = layer.maps
        if bg is not None and maps.ndim == 2:
            ax.imshow(bg)
        ax.imshow(tile(maps)[0] if maps.ndim == 3 else maps, cmap="inferno", alpha=0.6 if bg is not None else 1.0)
    elif isinstance(layer, VectorFieldLayer):
        if bg is not None:
            ax.imshow(bg)
        ax.quiver(layer.origins[:, 0], layer.origins[:, 1], layer.vectors[:, 0], -layer.vectors[:, 1], color="y")
    elif isinstance(layer, SamplingGridLayer):
        if bg is not None:
            ax.imshow(bg)
        g = layer.grid[::4, ::4]
        ax.plot(g[..., 0], g[..., 1], "c-", lw=0.5)
        ax.plot(g[..., 0].T, g[..., 1].T, "c-", lw=0.5)
    elif isinstance(layer, PointsLayer):
        if bg is not None:
            ax.imshow(bg)
        for ps in layer.sets:
            ax.scatter(ps.points[:, 0], ps.points[:, 1], s=12)
    elif isinstance(layer, BarsLayer):
        for j, vals in enumerate(layer.series.values()):
            ax.bar(np.arange(len(vals)) + 0.4 * j, vals, width=0.4)
    elif isinstance(layer, CurveLayer):
        for x, y in layer.series.values():
            ax.plot(x, y)
    elif isinstance(layer, MetricsLayer):
        ax.axis("off")
        ax.table(cellText=[[k, str(v)] for k, v in layer.values.items()], loc="center")


def deform_vs_torchvision(size: int = 512, channels: int = 3, out_channels: int = 3, repeats: int = 10) -> Optional[str]:
    """The project's deform_conv2d against torchvision's CPU kernel on the same inputs, or None
    when torchvision is not installed (it is not a dependency)."""
    try:
        import torchvision.ops as tv_ops
    except Exception:
        return None
    import torch

    from backends.functional.deformable import deform_conv2d

    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, channels, size, size, generator=g)
    w = torch.randn(out_channels, channels, 3, 3, generator=g)
    off = torch.randn(1, 18, size, size, generator=g) * 2
    mask = torch.rand(1, 9, size, size, generator=g)

    def timed(fn) -> float:
        fn()
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return float(np.median(ts)) * 1e3

    with torch.no_grad():
        ours = timed(lambda: deform_conv2d(x, off, w, padding=1, mask=mask))
        theirs = timed(lambda: tv_ops.deform_conv2d(x, off, w, padding=1, mask=mask))
        err = float((deform_conv2d(x, off, w, padding=1, mask=mask) - tv_ops.deform_conv2d(x, off, w, padding=1, mask=mask)).abs().max())
    return (f"deform_conv2d {size}x{size}, {channels}->{out_channels} channels, 3x3, v2 mask: ours {ours:.1f} ms, "
            f"torchvision {theirs:.1f} ms (ratio {ours / theirs:.2f}x), max difference {err:.1e} "
            f"[torch {torch.__version__}, {torch.get_num_threads()} threads]")


def startup_seconds() -> float:
    """Process start to the first computed frame drawn, in a fresh interpreter."""
    code = (
        "import time, sys; t0=float(sys.argv[1]);"
        "from explorer.cli import main;"
        "import explorer.cli as c;"
        "orig=c.render;"
        "c.render=lambda app,out,size:(c.wait_for_frame(app),print('FIRST_FRAME',time.time()-t0),app.close(),0)[-1];"
        "main(['--render',sys.argv[2]])"
    )
    t0 = time.time()
    scratch = Path(tempfile.mkdtemp(prefix="opscope-bench-")) / "first.png"  # never written: render is replaced
    out = subprocess.run([sys.executable, "-c", code, str(t0), str(scratch)], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "QT_QPA_PLATFORM": "offscreen"}, timeout=120)
    for line in out.stdout.splitlines():
        if line.startswith("FIRST_FRAME"):
            return float(line.split()[1])
    raise RuntimeError(out.stderr)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", default=",".join(SWEEPS))
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--no-matplotlib", action="store_true")
    parser.add_argument("--deform-only", action="store_true", help="only the deform_conv2d vs torchvision timing")
    parser.add_argument("--remote", metavar="ADDRESS", help="through a Ray actor ('local' or ray://HOST:PORT)")
    args = parser.parse_args(argv)
    if args.deform_only:
        print(deform_vs_torchvision() or "torchvision is not installed: nothing to compare")
        return 0

    import cv2
    import torch

    from backends.imageio import normalize_array
    from backends.registry import operator_names
    from explorer.app import build

    sample = cv2.imread(str(ROOT / "assets/images/astronaut.png"))[..., ::-1]  # RGB, as normalize_array takes
    sample = cv2.resize(sample, (args.size, args.size), interpolation=cv2.INTER_AREA)
    image = normalize_array(np.ascontiguousarray(sample), f"astronaut {args.size}")
    app = build(image, "bench", "dilated", restore_layout=False, remote=args.remote)
    app.window.resize(1600, 1000)
    app.window.show()
    _wait(app.window)

    print(f"machine: {platform.machine()} {platform.processor() or ''} · {os.cpu_count()} CPUs · "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads) · Python {platform.python_version()}")
    print(f"image {args.size}x{args.size}, {args.changes} parameter changes per operator, each waited for")
    print()
    print("| operator | parameter | latency p50 | latency p95 | compute p50 | render p50 | UI stall p99 | max stall | matplotlib fps | OpScope fps | speed-up |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    settling: dict[str, list[float]] = {}
    for op in [o for o in args.ops.split(",") if o]:
        if op not in operator_names():
            continue
        samples, stalls = bench_operator(app, op, args.changes)
        if not samples:
            continue
        if any(s.settling for s in samples):
            settling[op] = settled_latencies(app, op, max(10, args.changes // 4))
        lat = [s.latency_ms for s in samples]
        fps = 1000.0 / float(np.median(lat))
        mpl = float("nan") if args.no_matplotlib else matplotlib_loop(op, image.pixels, max(10, args.changes // 5))
        print(f"| {op} | {SWEEPS[op][0]} | {percentile(lat, 50):.1f} ms | {percentile(lat, 95):.1f} ms | "
              f"{percentile([s.compute_ms for s in samples], 50):.1f} ms | {percentile([s.render_ms for s in samples], 50):.1f} ms | "
              f"{percentile(stalls, 99):.1f} ms | {max(stalls, default=0):.1f} ms | {mpl:.1f} | {fps:.1f} | {fps / mpl:.1f}x |")
    if settling:
        print()
        print("Panels that settle once the parameters rest (full-matrix panels), change to complete frame:")
        print()
        print("| operator | complete frame p50 | complete frame p95 |")
        print("|---|---|---|")
        for op, lat in settling.items():
            print(f"| {op} | {percentile(lat, 50):.1f} ms | {percentile(lat, 95):.1f} ms |")
    app.close()
    if args.remote:
        print(f"\nworker: {app.worker.description}")
        return 0
    print()
    print(f"start-up to first computed frame: {startup_seconds():.2f} s")
    print(deform_vs_torchvision() or "deform_conv2d vs torchvision: torchvision not installed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
