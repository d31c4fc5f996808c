#!/usr/bin/env python
"""Soak: the real agent at the Modbus benchmark's load for a long time; does its memory stay flat?

A benchmark, not a test: it measures and prints one JSON document on stdout, and never asserts.
Progress goes to stderr. See bench/README.md for what each number means.

    python bench/soak.py                        # 30 minutes, 50 devices x 100 tags, 1 s poll
    python bench/soak.py --minutes 2            # quick check (60 s warm-up + 60 s measured)
    python bench/soak.py --minutes 10 --tracemalloc   # where Python allocations grow (slower)

The workload and the simulated devices are bench/modbus_bench.py's (`make_workload`, `ServerFleet`,
`agent_config`): the same seeded tag mix, served by pymodbus servers in separate processes. The
agent is `edge_agent.runtime.Agent` with `WallClock`, publishing to a private Mosquitto.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import platform
import sqlite3
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python bench/soak.py` from a checkout
    sys.path.insert(0, str(ROOT))

import pymodbus  # noqa: E402
from _common import Broker, rss_kb  # noqa: E402
from modbus_bench import ServerFleet, agent_config, make_workload  # noqa: E402

log = logging.getLogger("soak")


def slope_per_hour(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value) points, per hour."""
    if len(points) < 2:
        return None
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    sxx = sum((t - mx) ** 2 for t, _ in points)
    if sxx == 0:
        return None
    return sum((t - mx) * (v - my) for t, v in points) / sxx * 3600


def outbox_depth(path: Path) -> int | None:
    """The depth counter of a closed outbox file (unsent messages left after the agent's final drain)."""
    try:
        with sqlite3.connect(path) as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'depth'").fetchone()
        db.close()
    except sqlite3.Error:
        return None
    return int(row[0]) if row else None


def top_growth(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, n: int = 15) -> list[dict[str, Any]]:
    keep = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen importlib._bootstrap*")]
    stats = after.filter_traces(keep).compare_to(before.filter_traces(keep), "lineno")
    return [
        {
            "where": str(s.traceback[0]) if s.traceback else "?",
            "size_diff_kib": round(s.size_diff / 1024, 1),
            "count_diff": s.count_diff,
            "size_kib": round(s.size / 1024, 1),
        }
        for s in stats[:n]
    ]


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    from edge_agent.runtime import Agent
    from edgeproof.clock import WallClock

    images = make_workload(args.devices, args.tags, args.seed)
    doc: dict[str, Any] = {
        "benchmark": "edgeproof agent soak",
        "machine": {
            "cpu_count": os.cpu_count(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
            "pymodbus": pymodbus.__version__,
            "platform": platform.platform(),
        },
        "workload": {
            "devices": args.devices,
            "tags_per_device": args.tags,
            "tag_samples_per_s": sum(len(im.tags) for im in images),
            "poll_interval_s": 1.0,
            "seed": args.seed,
            "minutes": args.minutes,
            "warmup_s": args.warmup,
            "sample_every_s": args.sample_s,
            "tracemalloc": args.tracemalloc,
        },
    }
    if args.tracemalloc:
        tracemalloc.start(args.tracemalloc_frames)
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        workdir = Path(tmp)
        fleet = ServerFleet(args)
        broker = Broker(workdir, args.mqtt)
        doc["workload"]["server_processes"] = len(fleet.procs)
        doc["workload"]["mqtt"] = broker.kind
        data_dir = workdir / "agent"
        agent = Agent(agent_config(images, fleet.ports, 1.0, data_dir, broker.port), WallClock())
        stop = asyncio.Event()
        started = time.monotonic()
        cpu0 = time.process_time()
        task = asyncio.create_task(agent.run(stop, drain_timeout_s=5.0))
        series: list[dict[str, Any]] = []
        baseline: dict[str, Any] | None = None
        snap: tracemalloc.Snapshot | None = None
        end_at = started + args.minutes * 60
        next_at = started
        try:
            while True:
                now = time.monotonic()
                if now >= end_at or task.done():
                    break
                next_at += args.sample_s
                await asyncio.sleep(max(0.0, min(next_at, end_at) - time.monotonic()))
                elapsed = time.monotonic() - started
                point = {
                    "t_s": round(elapsed, 1),
                    "rss_kib": rss_kb(),
                    "gc_objects": len(gc.get_objects()),  # tracked, not frozen: what the agent made since start
                    "samples_read": agent.samples_read,
                    "overruns": sum(agent.overruns.values()),
                    "outbox_depth": agent.outbox.depth(),
                    "published": agent.publisher.published,
                    "cpu_s": round(time.process_time() - cpu0, 2),
                }
                if args.tracemalloc:
                    point["traced_kib"] = round(tracemalloc.get_traced_memory()[0] / 1024, 1)
                series.append(point)
                if baseline is None and elapsed >= args.warmup:
                    baseline = point
                    if args.tracemalloc:
                        snap = tracemalloc.take_snapshot()
                        # the snapshot lives until the end: count it in the starting RSS, not in the growth
                        point["rss_kib"] = rss_kb()
                    log.warning("warm-up over: RSS %s KiB at %.0f s", point["rss_kib"], elapsed)
                elif len(series) % max(1, round(60 / args.sample_s)) == 0:
                    log.warning(
                        "%.0f s: RSS %s KiB, %d samples, %d overruns, outbox %d, published %d",
                        elapsed,
                        point["rss_kib"],
                        point["samples_read"],
                        point["overruns"],
                        point["outbox_depth"],
                        point["published"],
                    )
            end = series[-1] if series else None
            end_snap = tracemalloc.take_snapshot() if args.tracemalloc and snap is not None else None
            broker_rss = rss_kb(broker.proc.pid) if broker.proc else None
            bad = sum(1 for latest in agent.latest.values() for s in latest.values() if not s.good)
            wall = time.monotonic() - started
            cpu = time.process_time() - cpu0
        finally:
            stop.set()
            await task
            broker.stop()
            fleet.stop()
        depth_after_stop = outbox_depth(data_dir / "outbox.sqlite")
    if args.tracemalloc:
        tracemalloc.stop()
    measured = [p for p in series if baseline is not None and p["t_s"] >= baseline["t_s"]]
    rss_start = baseline["rss_kib"] if baseline else None
    rss_end = end["rss_kib"] if end else None
    doc["rss"] = {
        "start_kib": rss_start,
        "start_at_s": baseline["t_s"] if baseline else None,
        "end_kib": rss_end,
        "end_at_s": end["t_s"] if end else None,
        "growth_pct": round((rss_end - rss_start) / rss_start * 100, 2) if rss_start and rss_end else None,
        "target_growth_pct_max": 5.0,
        "peak_kib_after_warmup": max((p["rss_kib"] for p in measured), default=None),
        "min_kib_after_warmup": min((p["rss_kib"] for p in measured), default=None),
        "slope_kib_per_hour": round(s, 1)
        if (s := slope_per_hour([(p["t_s"], p["rss_kib"]) for p in measured])) is not None
        else None,
        "gc_objects_start": baseline["gc_objects"] if baseline else None,
        "gc_objects_end": end["gc_objects"] if end else None,
        "broker_rss_kib_at_end": broker_rss,
    }
    doc["agent"] = {
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "cpu_cores_used": round(cpu / wall, 3),
        "samples_read": agent.samples_read,
        "samples_per_s": round(agent.samples_read / wall, 1),
        "overruns": sum(agent.overruns.values()),
        "overruns_after_warmup": (end["overruns"] - baseline["overruns"]) if end and baseline else None,
        "bad_tags_at_end": bad,
        "outbox_depth_at_end": end["outbox_depth"] if end else None,
        "outbox_depth_after_stop": depth_after_stop,
        "messages_published": agent.publisher.published,
        "mqtt_connects": agent.publisher.connects,
    }
    if end_snap is not None and snap is not None:
        doc["tracemalloc_top_growth"] = top_growth(snap, end_snap)
        doc["tracemalloc_note"] = "tracing costs memory and CPU: RSS figures of this run are inflated"
    doc["series"] = series
    return doc


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=30.0, help="total run, warm-up included")
    p.add_argument("--devices", type=int, default=50)
    p.add_argument("--tags", type=int, default=100, help="tags per device")
    p.add_argument("--warmup", type=float, default=60.0, help="seconds before the starting RSS is taken")
    p.add_argument("--sample-s", type=float, default=10.0, help="seconds between RSS samples")
    p.add_argument("--tracemalloc", action="store_true", help="trace Python allocations; top growth in the JSON")
    p.add_argument("--tracemalloc-frames", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=20240611)
    p.add_argument("--server-procs", type=int, default=max(1, min(4, (os.cpu_count() or 2) - 1)))
    p.add_argument("--mqtt", choices=["auto", "none"], default="auto", help="auto: private Mosquitto if installed")
    args = p.parse_args()
    if args.minutes * 60 <= args.warmup:
        p.error("--minutes must be longer than the warm-up")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    doc = asyncio.run(soak(args))
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
