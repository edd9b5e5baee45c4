"""The command line: ``python main.py [IMAGE] [--op NAME] [--set k=v ...] [--device D]
[--render OUT.png] [--list]``. Bad names, values and files give one line and exit code 2."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from backends.imageio import DEFAULT_MAX_SIDE, ImageLoadError, load_image
from backends.params import ParamError, describe
from backends.registry import UnknownOperator, families, spec_of, validated_params

EXIT_USAGE = 2
RENDER_TIMEOUT_S = 120.0
MIN_MAX_SIDE = 32  # smaller live images show nothing an operator can explain
WINDOW_MIN, WINDOW_MAX = 320, 7680


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="opscope", description="A live microscope for deep-learning operators.")
    p.add_argument("image", nargs="?", help="image file to open (default: a bundled sample)")
    p.add_argument("--op", default="dilated", help="operator name (see --list)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="NAME=VALUE",
                   help="set a parameter; repeat for several")
    p.add_argument("--query", metavar="X,Y", help="query pixel, in image pixels")
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda or mps")
    p.add_argument("--render", metavar="OUT.png", help="render the window with its panels to a PNG and exit")
    p.add_argument("--size", default="1600x1000", metavar="WxH", help="window size for --render")
    p.add_argument("--max-side", type=int, default=DEFAULT_MAX_SIDE, help="downscale larger images for the live view")
    p.add_argument("--sweep", metavar="NAME=START:STOP:COUNT", help="sweep a parameter (or NAME=A,B,C) into --video")
    p.add_argument("--video", metavar="OUT.mp4", help="with --sweep: the MP4 or GIF to write, one frame per value")
    p.add_argument("--panel", metavar="NAME", help="with --sweep: film this panel instead of the window")
    p.add_argument("--batch", metavar="DIR", help="apply the operator to every image in DIR (with --out), then exit")
    p.add_argument("--out", metavar="DIR", help="with --batch: where the results and manifest.json go")
    p.add_argument("--remote", metavar="ADDRESS", help="compute in a Ray actor: 'local' (a private Ray on 127.0.0.1) "
                   "or ray://HOST:PORT (see README, 'Beyond one machine')")
    p.add_argument("--ray", metavar="ADDRESS", help="with --batch: each image a Ray task ('local' or ray://HOST:PORT); "
                   "with --sweep: each frame a Ray task")
    p.add_argument("--install-desktop", action="store_true", help="add OpScope to the desktop's menu, then exit")
    p.add_argument("--uninstall-desktop", action="store_true", help="remove it from the menu, then exit")
    p.add_argument("--list", action="store_true", help="list operators and their parameters, then exit")
    return p.parse_args(argv)


def list_operators() -> str:
    lines = []
    for family, specs in families().items():
        lines.append(f"{family}:")
        for spec in specs:
            lines.append(f"  {spec.name:<14} {spec.title}")
            lines.extend(f"      {describe(param)}" for param in spec.params)
            lines.extend(f"      action {a.name}: {a.title}" for a in spec.actions)
    return "\n".join(lines)


def _parse_sets(sets: Sequence[str]) -> dict[str, str]:
    out = {}
    for item in sets:
        if "=" not in item:
            raise ParamError(f"--set {item!r}: expected NAME=VALUE")
        name, value = item.split("=", 1)
        out[name.strip()] = value.strip()
    return out


def _parse_pair(text: str, what: str, sep: str = ",") -> tuple[int, int]:
    try:
        a, b = (int(float(v)) for v in text.lower().split(sep))
    except (ValueError, OverflowError):
        raise ParamError(f"{what} {_short(text)!r}: expected two finite numbers like 10{sep}20") from None
    return a, b


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    if not all(WINDOW_MIN <= v <= WINDOW_MAX for v in size):
        raise ParamError(f"--size {size[0]}x{size[1]}: each side must be within {WINDOW_MIN}..{WINDOW_MAX}")
    return size


def _check_query(query: Optional[tuple[int, int]], pixels) -> Optional[tuple[int, int]]:
    if query is not None:
        h, w = pixels.shape[:2]
        if not (0 <= query[0] < w and 0 <= query[1] < h):
            raise ParamError(f"--query {query[0]},{query[1]} is outside the {w}x{h} image")
    return query


def _check_render_path(out: str) -> None:
    """Fails before any computing when the picture could not be written."""
    path = Path(out)
    if path.suffix.lower() != ".png":
        raise ParamError(f"--render {_short(out)!r}: the file name must end in .png")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ParamError(f"--render {_short(out)!r}: no folder {_short(str(folder))!r}")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ParamError(f"--render {_short(out)!r}: not writable")


def main(argv: Optional[Sequence[str]] = None, splash=None) -> int:
    """``splash``: a splash screen shown before the imports (main.py), closed when the window shows."""
    args = parse_args(argv)
    if args.install_desktop or args.uninstall_desktop:
        from explorer.desktop import install_desktop, uninstall_desktop

        if args.install_desktop:
            print(f"wrote {install_desktop()}")
        else:
            removed = uninstall_desktop()
            print("removed " + ", ".join(map(str, removed)) if removed else "no desktop entry to remove")
        return 0
    if args.list:
        print(list_operators())
        return 0
    try:
        spec_of(args.op)
        params = validated_params(args.op, _parse_sets(args.sets))
        query = _parse_pair(args.query, "--query") if args.query else None
        size = _check_size(_parse_pair(args.size, "--size", "x"))
        if args.max_side < MIN_MAX_SIDE:
            raise ParamError(f"--max-side {args.max_side}: at least {MIN_MAX_SIDE}")
        if args.render:
            _check_render_path(args.render)
        sweep = None
        if args.sweep or args.video:
            from explorer.sweep import check_video_path, parse_sweep

            if not (args.sweep and args.video):
                raise ParamError("--sweep and --video go together")
            sweep = parse_sweep(args.op, args.sweep)
            check_video_path(args.video)
        if args.batch or args.out:
            return batch(args, params)
        from explorer.image_sources import sample_path

        path = Path(args.image) if args.image else sample_path()
        image = load_image(path, args.max_side)
        query = _check_query(query, image.pixels)
    except (UnknownOperator, ParamError, ImageLoadError) as exc:
        print(f"opscope: error: {exc}", file=sys.stderr)
        return EXIT_USAGE

    if args.render or sweep:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    else:
        from explorer.app import platform_problem

        problem = platform_problem()
        if problem:
            print(f"opscope: cannot open a window: {problem}", file=sys.stderr)
            return 1
    from backends.device import DeviceError
    from explorer.app import build
    from explorer.cluster import ClusterError

    try:
        app = build(image, str(path), args.op, params, args.device, args.max_side,
                    restore_layout=not (args.render or sweep), remote=args.remote)
    except (DeviceError, ClusterError) as exc:
        print(f"opscope: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if query is not None:
        app.session.set_query(*query)
    if sweep:
        return film(app, sweep, args.video, args.panel, size, args.ray)
    if args.render:
        return render(app, args.render, size)
    app.window.show()
    from explorer.splash import finish

    finish(splash, app.window)
    code = app.qapp.exec()
    app.worker.shutdown()
    return code


def wait_for_frame(app, timeout_s: float = RENDER_TIMEOUT_S) -> Optional[str]:
    """Runs the event loop until the newest request is drawn. Returns an error message or None."""
    from PySide6 import QtCore

    window = app.window
    outcome: dict[str, Optional[str]] = {}
    loop = QtCore.QEventLoop()

    def done(stamp: int) -> None:
        if window.frame_settled():
            outcome["error"] = None
            loop.quit()

    def failed(message: str) -> None:
        outcome["error"] = message
        loop.quit()

    window.frameApplied.connect(done)
    window.frameFailed.connect(failed)
    QtCore.QTimer.singleShot(int(timeout_s * 1000), loop.quit)
    if not window.frame_settled():
        loop.exec()
    window.frameApplied.disconnect(done)
    window.frameFailed.disconnect(failed)
    if not window.frame_settled() and "error" not in outcome:
        return f"no frame within {timeout_s:.0f} s"
    return outcome.get("error")


def batch(args: argparse.Namespace, params: dict) -> int:
    """``--batch DIR --out DIR``: one line per failed image, a summary, exit 1 if any failed."""
    from backends.device import DeviceError, pick_device
    from explorer.batch import run_batch

    if not (args.batch and args.out):
        raise ParamError("--batch and --out go together")
    folder, out = Path(args.batch), Path(args.out)
    if not folder.is_dir():
        raise ParamError(f"--batch {args.batch!r}: no such folder")
    try:
        device = pick_device(args.device)
    except DeviceError as exc:
        raise ParamError(str(exc)) from None
    executor = None
    if args.ray:
        from explorer.cluster import ClusterError, RayExecutor

        try:
            executor = RayExecutor(args.ray)
        except ClusterError as exc:
            raise ParamError(str(exc)) from None
    report = run_batch(folder, out, args.op, params, args.max_side, device, executor=executor)
    for item in report.failed:
        said = item.error if item.error.startswith(item.file) else f"{item.file}: {item.error}"
        print(f"opscope: {said}", file=sys.stderr)
    done = len(report.items) - len(report.failed)
    print(f"processed {done} of {len(report.items)} images into {out} (manifest.json lists each)")
    return 1 if report.failed else 0


def film(app, sweep: tuple[str, list], out: str, panel: Optional[str], size: tuple[int, int],
         ray: Optional[str] = None) -> int:
    """The sweep as a video, headless; one line said, the exit code says how it went. With
    ``ray`` the frames are computed first, one Ray task per value (explorer/cluster_sweep.py)."""
    from explorer.cluster import ClusterError
    from explorer.sweep import write_sweep

    app.window.resize(*size)
    app.window.show()
    try:
        if ray:
            from explorer.cluster import RayExecutor
            from explorer.cluster_sweep import prefetch_sweep

            wait_for_frame(app)  # the image's first frame: the sweep's requests share its key
            prefetch_sweep(RayExecutor(ray), app.scheduler, sweep[0], sweep[1])
        frames = write_sweep(app, sweep[0], sweep[1], out, panel)
    except (ParamError, OSError, ClusterError) as exc:
        print(f"opscope: error: {exc}", file=sys.stderr)
        app.close()
        return 1
    print(f"wrote {out} ({frames} frames)")
    app.close()
    return 0


def render(app, out: str, size: tuple[int, int]) -> int:
    from PySide6 import QtWidgets

    from widgets.save_png import save_png

    window = app.window
    window.resize(*size)
    window.show()
    error = wait_for_frame(app)
    # Let docks settle to their final geometry before grabbing.
    deadline = time.perf_counter() + 0.3
    while time.perf_counter() < deadline:
        QtWidgets.QApplication.processEvents()
    code = 0
    if error:
        print(f"opscope: error: {error}", file=sys.stderr)
        code = 1
    elif not save_png(window.grab(), out):
        print(f"opscope: error: could not write {out}", file=sys.stderr)
        code = 1
    else:
        print(f"wrote {out}")
    app.close()
    return code
