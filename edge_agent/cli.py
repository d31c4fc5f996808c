"""`edgeproof agent`: run the edge agent on one configuration file."""

from __future__ import annotations

import argparse
import sys

from edge_agent.config import load_config
from edge_agent.runtime import Agent
from edgeproof.clock import ClockSpec
from edgeproof.configfile import ConfigError
from edgeproof.logs import setup_logging
from edgeproof.signals import run_until_signalled


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="agent YAML file (see docs/configuration.md)")
    parser.add_argument(
        "--clock", help="ClockSpec JSON for simulated plant time (set by the demo and tests); default: real time"
    )
    parser.add_argument("--drain-timeout", type=float, default=10.0, help="seconds to flush the outbox on stop")
    parser.add_argument("--check", action="store_true", help="validate the configuration and exit")
    parser.add_argument("--log-level", default="INFO")


def run(args: argparse.Namespace) -> int:
    setup_logging(args.log_level)
    try:
        config = load_config(args.config)
    except ConfigError as e:
        print(f"invalid configuration:\n{e}", file=sys.stderr)
        return 2
    if args.check:
        print(f"{args.config}: ok ({len(config.machines)} machines, {len(config.devices)} devices)")
        return 0
    clock = ClockSpec.model_validate_json(args.clock).build() if args.clock else ClockSpec().build()
    agent = Agent(config, clock)
    run_until_signalled(lambda stop: agent.run(stop, args.drain_timeout))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edge_agent", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))
