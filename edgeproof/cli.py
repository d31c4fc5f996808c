"""`edgeproof`: one command line for the whole product.

Each subcommand is owned by its package (add_arguments + run); modules load only when their
subcommand runs, so `edgeproof agent` on an industrial PC does not import the report stack.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from edgeproof import __version__

# name -> (module, add-arguments function, run function, help)
SUBCOMMANDS: dict[str, tuple[str, str, str, str]] = {
    "demo": ("edgeproof.demo", "add_arguments", "run", "run the simulated before/after retrofit demo, no setup"),
    "sim": ("simulators.cli", "add_arguments", "run", "serve the simulated plant over Modbus TCP and OPC UA"),
    "agent": ("edge_agent.cli", "add_arguments", "run", "run the edge agent on a configuration file"),
    "read": ("edge_agent.read", "add_arguments", "run", "read every configured tag once, print JSON lines"),
    "probe": ("connectors.probe", "add_arguments", "run", "commissioning: decode Modbus registers, browse OPC UA"),
    "ingest": ("cloud_ingest.cli", "add_ingest_arguments", "run_ingest", "run the cloud ingest (MQTT → SQLite)"),
    "report": ("cloud_ingest.cli", "add_report_arguments", "run_report", "build before/after evidence from a store"),
    "gaps": (
        "cloud_ingest.cli",
        "add_gaps_arguments",
        "run_gaps",
        "an agent's sequence gaps: evicted or missing",
    ),
    "enroll": (
        "cloud_ingest.enroll",
        "add_arguments",
        "run",
        "register (or revoke) an agent's public key at the cloud; shows its fingerprint",
    ),
    "project": (
        "cloud_ingest.project_cli",
        "add_arguments",
        "run",
        "retrofit projects: import, create, set, show, list",
    ),
    "baseline": (
        "cloud_ingest.declared_cli",
        "add_arguments",
        "run",
        "declared (manual) baseline figures of a project: import CSV/Excel, list, template, withdraw",
    ),
    "web": ("cloud_ingest.web.server", "add_arguments", "run", "serve the evaluator's read-only web app on a store"),
    "user": ("cloud_ingest.users", "add_arguments", "run", "read-only accounts of the web app: add, list, remove"),
    "export": (
        "cloud_ingest.bundle_cli",
        "add_export_arguments",
        "run_export",
        "write a project's evidence bundle: record, signed messages, enrolled keys",
    ),
    "verify": (
        "cloud_ingest.bundle_cli",
        "add_verify_arguments",
        "run_verify",
        "check an evidence bundle offline: hashes, signatures, coverage, recomputed indicators",
    ),
    "kpi": ("edge_agent.recompute", "add_arguments", "run", "recompute every indicator from an agent's event log"),
    "influx": ("cloud_ingest.influx_cli", "add_arguments", "run", "InfluxDB copy of the time series: backfill"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="edgeproof", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"edgeproof {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    wanted = next((a for a in argv if a in SUBCOMMANDS), None)
    runners = {}
    for name, (module_name, add_name, run_name, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        if name == wanted:  # only the chosen subcommand's module is imported
            module = importlib.import_module(module_name)
            getattr(module, add_name)(p)
            runners[name] = getattr(module, run_name)
    args = parser.parse_args(argv)
    return int(runners[args.command](args))


if __name__ == "__main__":
    sys.exit(main())
