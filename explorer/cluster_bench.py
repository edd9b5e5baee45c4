"""Batch benchmark: the same folder of images through run_batch here, and as Ray tasks on a local
Ray node with 1 and 2 CPUs. Numbers, not assertions; results go in docs/BENCHMARKS.md.

    python -m explorer.cluster_bench [--images 100] [--size 256] [--op dilated]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


def make_folder(folder: Path, count: int, size: int) -> None:
    """``count`` PNGs cut from the bundled samples (distinct crops, so no two are the same)."""
    import cv2

    from explorer.image_sources import samples

    sources = [cv2.imread(str(p)) for p in samples().values()]
    sources = [s for s in sources if s is not None and min(s.shape[:2]) >= 64]
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        src = sources[i % len(sources)]
        shift = (i // len(sources)) * 3
        crop = src[shift:, shift:]
        cv2.imwrite(str(folder / f"img{i:03d}.png"), cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA))


def transport(size: int = 512, repeats: int = 50) -> None:
    """What the actor adds to a frame: a repeated request (answered without computing) costs the
    call, the wire form both ways and the frame's bytes; measured with every layer and with only
    the centre's."""
    import pickle

    import cv2
    import numpy as np
    import ray

    from backends.imageio import normalize_array
    from backends.registry import validated_params
    from explorer.cluster import connect
    from explorer.image_sources import sample_path
    from explorer.messages import Request, freeze
    from explorer.remote_actor import actor_class
    from explorer.remote_codec import outcome_from_wire, request_to_wire

    connect("local")
    rgb = cv2.resize(cv2.imread(str(sample_path("astronaut")))[..., ::-1], (size, size), interpolation=cv2.INTER_AREA)
    image = normalize_array(np.ascontiguousarray(rgb), "bench")
    actor = actor_class().remote()
    ray.get(actor.set_image.remote(1, image.pixels))
    print(f"\n{size}x{size}, dilated, local Ray actor, {repeats} calls each; load average {os.getloadavg()[0]:.1f}")
    print("| what crosses | frame bytes | call p50 | call p95 |\n|---|---|---|---|")
    for stamp, label in ((1, "every layer"), (2, "the centre panel only")):
        req = request_to_wire(Request(stamp, "dilated", freeze(validated_params("dilated", {})), None, 1, image.pixels))
        first = outcome_from_wire(ray.get(actor.compute.remote(req, (), True)))
        hidden = () if stamp == 1 else tuple(n for n in first.result.names if n != "Output")
        times, size_b = [], 0
        for i in range(repeats):
            t0 = time.perf_counter()
            data = ray.get(actor.compute.remote(dict(req, stamp=stamp + 10 * i), hidden, False))
            outcome_from_wire(data)
            times.append((time.perf_counter() - t0) * 1e3)
            size_b = len(pickle.dumps(data, protocol=5))
        print(f"| {label} | {size_b / 1024:.0f} KiB | {np.percentile(times, 50):.1f} ms | {np.percentile(times, 95):.1f} ms |")
    ray.kill(actor)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--op", default="dilated")
    parser.add_argument("--transport", action="store_true", help="only what one actor call adds to a frame")
    args = parser.parse_args(argv)
    if args.transport:
        transport()
        return 0

    import torch

    from explorer.app import configure_threads
    from explorer.batch import run_batch
    from explorer.cluster import RayExecutor, shutdown

    configure_threads()
    root = Path(tempfile.mkdtemp(prefix="opscope-cluster-bench-"))
    make_folder(root / "in", args.images, args.size)
    print(f"{args.images} images {args.size}x{args.size}, operator {args.op}; load average before: "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    t0 = time.perf_counter()
    run_batch(root / "in", root / "local", args.op, {}, args.size, torch.device("cpu"))
    print(f"| local, in process ({torch.get_num_threads()} torch thread) | {time.perf_counter() - t0:.1f} s | - |")
    for cpus in (1, 2):
        t0 = time.perf_counter()
        executor = RayExecutor("local", local_cpus=cpus)
        started = time.perf_counter() - t0
        t1 = time.perf_counter()
        report = run_batch(root / "in", root / f"ray{cpus}", args.op, {}, args.size, torch.device("cpu"),
                           executor=executor)
        ran = time.perf_counter() - t1
        assert not report.failed, report.failed
        print(f"| Ray, local node, {cpus} worker(s) | {ran:.1f} s | {started:.1f} s start |")
        shutdown()
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
