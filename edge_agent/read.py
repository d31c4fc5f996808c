"""`edgeproof read`: read every configured tag once and print the samples as JSON lines.

Exit status 0 when every tag read good, 1 otherwise, 2 for an invalid configuration — so it can
gate a commissioning checklist or a deployment script.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from connectors.registry import open_devices
from connectors.sample import Sample
from edge_agent.config import load_config
from edgeproof.clock import WallClock
from edgeproof.configfile import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="agent YAML file")
    parser.add_argument("--device", action="append", help="only this device (repeatable)")


def sample_json(s: Sample) -> str:
    return json.dumps(
        {
            "device": s.device_id,
            "tag": s.tag,
            "value": s.value,
            "quality": "good" if s.good else "bad",
            "reason": s.reason,
            "timestamp": s.agent_time.isoformat(),
            "source_timestamp": s.source_time.isoformat() if s.source_time else None,
        },
        ensure_ascii=False,
    )


async def _read(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    wanted = [d for d in config.devices if not args.device or d.id in args.device]
    missing = sorted(set(args.device or []) - {d.id for d in config.devices})
    if missing:
        print(f"{args.config}: no device {', '.join(missing)}", file=sys.stderr)
        return 2
    clock = WallClock()
    all_good = True
    for device in open_devices(wanted).values():
        try:
            samples = await device.read(clock.now)
        finally:
            await device.close()
        for s in samples:
            all_good &= s.good
            print(sample_json(s), flush=True)
    return 0 if all_good else 1


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_read(args))
    except ConfigError as e:
        print(f"invalid configuration:\n{e}", file=sys.stderr)
        return 2
