"""`edgeproof agent`: run the edge agent on one configuration file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edge_agent.config import load_config
from edge_agent.identity import IdentityError, load_or_create
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
    parser.add_argument(
        "--show-key",
        action="store_true",
        help="print the agent id, public key and fingerprint (creating the key if missing) and exit",
    )
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
    if args.show_key:
        return show_key(config.agent.id, config.agent.data_dir)
    clock = ClockSpec.model_validate_json(args.clock).build() if args.clock else ClockSpec().build()
    try:
        agent = Agent(config, clock)
    except IdentityError as e:
        print(f"agent key unusable: {e}", file=sys.stderr)
        return 2
    run_until_signalled(lambda stop: agent.run(stop, args.drain_timeout))
    return 0


def show_key(agent_id: str, data_dir: Path) -> int:
    """What the operator compares with `edgeproof enroll`'s output; never the private key."""
    try:
        key = load_or_create(data_dir)
    except IdentityError as e:
        print(f"agent key unusable: {e}", file=sys.stderr)
        return 2
    print(f"agent        {agent_id}")
    print(f"key file     {key.path}{' (created now)' if key.created else ''}")
    print(f"key id       {key.key_id}")
    print(f"public key   {key.public_key}")
    print(f"fingerprint  {key.fingerprint}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edge_agent", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))
