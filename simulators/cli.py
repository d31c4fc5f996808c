"""Command line: serve one phase of a scenario (`python -m simulators`, or `edgeproof sim`).

Prints one JSON line {"ready": true, "clock": ..., "endpoints": ...} on stdout once every server
listens, then runs until SIGTERM/SIGINT (exit 0) or, with --until-end, until plant time passes the
window end by a minute. A bad scenario file exits 2 with file:line: field: message on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from edgeproof.clock import Clock, ClockSpec, ScaledClock
from edgeproof.configfile import ConfigError
from simulators.runner import run_plant
from simulators.scenario import Scenario, demo_scenario_path, load_scenario

UNTIL_END_GRACE_S = 60.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scenario", type=Path, default=None, help="scenario YAML (default: the demo plant)")
    parser.add_argument("--phase", required=True, help="phase of the scenario to serve, e.g. baseline")
    parser.add_argument("--port-base", type=int, default=15020, help="IO gateway port; machine i uses base+1+i")
    parser.add_argument("--speed", type=float, default=1.0, help="plant seconds per wall second")
    parser.add_argument(
        "--lead-s", type=float, default=120.0,
        help="plant time starts this many seconds before the window, once the servers are ready"
    )
    parser.add_argument("--clock", default=None, help="a ClockSpec as JSON; overrides --speed and --lead-s")
    parser.add_argument("--truth", type=Path, default=None, help="write the phase's ground truth here (JSON)")
    parser.add_argument("--until-end", action="store_true", help="exit once plant time passes the window end + 60 s")
    parser.add_argument(
        "--opcua-pki",
        type=Path,
        default=None,
        help="CNCs offer only Sign/SignAndEncrypt endpoints; certificate in DIR/<machine>/own, "
        "trusted client certificates in DIR/<machine>/trusted",
    )
    parser.add_argument(
        "--opcua-user",
        action="append",
        default=None,
        metavar="NAME:PASSWORD",
        help="CNCs accept only these users (repeatable); for test plants only, as the command line is visible",
    )


def _clock(args: argparse.Namespace, scenario: Scenario) -> Clock:
    if args.clock:
        return ClockSpec.model_validate_json(args.clock).build()
    if args.speed <= 0:
        raise ValueError("--speed must be positive")
    start = scenario.phase(args.phase).window.start - timedelta(seconds=args.lead_s)
    return ScaledClock(start, None, args.speed)  # paused until every server is up


async def _until_end(clock: Clock, scenario: Scenario, phase: str, stop: asyncio.Event) -> None:
    deadline = scenario.phase(phase).window.end + timedelta(seconds=UNTIL_END_GRACE_S)
    while (remaining := (deadline - clock.now()).total_seconds()) > 0:
        await clock.sleep(remaining)
    stop.set()


def _users(pairs: list[str] | None) -> dict[str, str] | None:
    if pairs is None:
        return None
    users: dict[str, str] = {}
    for pair in pairs:
        name, _, password = pair.partition(":")
        if not name or not password:
            raise ValueError("--opcua-user takes NAME:PASSWORD")  # not echoed: it holds a password
        users[name] = password
    return users


def _install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except NotImplementedError:  # Windows event loops
            signal.signal(sig, lambda *_: loop.call_soon_threadsafe(stop.set))


def _print_ready(info: dict[str, Any]) -> None:
    print(json.dumps({"ready": True, "clock": info["clock"], "endpoints": info["endpoints"]}), flush=True)


async def _serve(args: argparse.Namespace, scenario: Scenario, clock: Clock, users: dict[str, str] | None) -> None:
    stop = asyncio.Event()
    _install_signal_handlers(stop)
    watcher = asyncio.create_task(_until_end(clock, scenario, args.phase, stop)) if args.until_end else None
    try:
        await run_plant(
            scenario, args.phase, clock, args.port_base, args.truth, _print_ready, stop,
            opcua_pki_dir=args.opcua_pki, opcua_users=users,
        )  # fmt: skip
    finally:
        if watcher is not None:
            watcher.cancel()


def run(args: argparse.Namespace) -> int:
    try:
        scenario = load_scenario(args.scenario)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 2
    if args.phase not in scenario.phases:
        source = args.scenario or demo_scenario_path()
        print(f"{source}: unknown phase {args.phase!r}; phases: {', '.join(scenario.phases)}", file=sys.stderr)
        return 2
    try:
        clock = _clock(args, scenario)
    except (ValidationError, ValueError) as e:
        print(f"bad clock: {e}", file=sys.stderr)
        return 2
    try:
        users = _users(args.opcua_user)
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(args, scenario, clock, users))
    except (OSError, RuntimeError) as e:  # typically a port already in use (pymodbus raises RuntimeError)
        print(f"cannot serve: {e}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulators", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    # asyncua warns at every start that security None has no signing/encryption; that is the point here.
    logging.getLogger("asyncua").setLevel(logging.ERROR)
    return run(args)
