"""`edgeproof enroll`: register an agent's public key at the cloud, revoke one, or list them.

Enrolling prints the key's fingerprint: the operator compares it, group by group, with what
`edgeproof agent --config FILE --show-key` prints on the agent's industrial PC before trusting
the evidence. Messages the agent signed before its key was enrolled were held pending; enrolling
verifies them and moves them in (or rejects them) in the same transaction.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

from cloud_ingest.dialect import is_postgres, mask, store_target
from cloud_ingest.store import Store

DEFAULT_DB = Path("var/ingest.sqlite")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        type=store_target,
        default=DEFAULT_DB,
        help=f"SQLite file or postgresql://user@host/database URL (default: ./{DEFAULT_DB})",
    )
    parser.add_argument("--agent", required=True, help="agent id")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--public-key", metavar="B64", help="the agent's public key (base64), from --show-key")
    what.add_argument(
        "--from-birth",
        action="store_true",
        help="take the key announced in the agent's latest birth message in the store",
    )
    what.add_argument("--revoke", metavar="KEY_ID", help="mark an enrolled key revoked (see --from)")
    what.add_argument("--list", action="store_true", help="show the agent's keys and messages by verification status")
    parser.add_argument(
        "--from",
        dest="revoke_from",
        metavar="TIME",
        help="with --revoke: ISO 8601 time with offset; messages produced from then on are rejected (default: now)",
    )


def _error(text: str) -> int:
    print(f"enroll: error: {text}", file=sys.stderr)
    return 2


def _fingerprint_lines(fingerprint: str) -> list[str]:
    groups = fingerprint.split()
    return ["  " + " ".join(groups[:8]), "  " + " ".join(groups[8:])]


def run(args: argparse.Namespace) -> int:
    """Exit 0 when done, 2 on a bad key, an unknown key or agent, or a missing store."""
    if args.revoke_from is not None and args.revoke is None:
        return _error("--from goes with --revoke")
    if (args.from_birth or args.revoke or args.list) and not is_postgres(args.db) and not Path(args.db).is_file():
        return _error(f"no store at {args.db}")
    with Store(args.db) as store:
        if args.list:
            return _list(store, args.agent)
        if args.revoke:
            return _revoke(store, args.agent, args.revoke, args.revoke_from)
        public_key = args.public_key
        if args.from_birth:
            announced = store.announced_key(args.agent)
            if announced is None:
                return _error(f"no birth message of agent {args.agent!r} announcing a public key in {mask(args.db)}")
            print(
                f"public key taken from the birth message seq {announced.birth_seq} of agent {args.agent} "
                f"(produced {announced.produced_at.isoformat()}, {announced.status})"
            )
            if not announced.self_signed:
                return _error("that birth message is not signed by the key it announces; not enrolled")
            public_key = announced.public_key
        try:
            result = store.enroll_key(args.agent, public_key)
        except ValueError as e:
            return _error(str(e))
    print(f"agent        {result.agent_id}")
    print(f"key id       {result.key_id}")
    print(f"public key   {result.public_key}")
    print("fingerprint  (compare with `edgeproof agent --config FILE --show-key` on the agent)")
    print("\n".join(_fingerprint_lines(result.fingerprint)))
    state = "already enrolled" if result.already_enrolled else "enrolled"
    print(f"{state} at {result.enrolled_at.isoformat()}")
    print(
        f"pending messages signed by this key: {result.pending_stored} verified and stored, "
        f"{result.pending_duplicates} duplicate, {result.pending_rejected} rejected"
    )
    return 0


def _revoke(store: Store, agent_id: str, key_id: str, when: str | None) -> int:
    if when is None:
        at = datetime.now(UTC)
    else:
        try:
            at = datetime.fromisoformat(when)
        except ValueError:
            return _error(f"{when!r} is not an ISO 8601 date-time")
        if at.tzinfo is None:
            return _error(f"{when!r} has no UTC offset (add e.g. +08:00 or Z)")
    try:
        moved = store.revoke_key(agent_id, key_id, at)
    except KeyError as e:
        return _error(str(e.args[0]))
    revoked = next(k for k in store.agent_keys(agent_id) if k.key_id == key_id)
    assert revoked.revoked_at is not None
    print(f"key {key_id} of agent {agent_id} revoked from {revoked.revoked_at.isoformat()}")
    print(f"stored messages it signed from then on, now rejected: {moved}")
    return 0


def _list(store: Store, agent_id: str) -> int:
    keys = store.agent_keys(agent_id)
    print(f"agent {agent_id}: {len(keys)} enrolled key(s)")
    for k in keys:
        revoked = f", revoked from {k.revoked_at.isoformat()}" if k.revoked_at else ""
        print(f"  {k.key_id}  enrolled {k.enrolled_at.isoformat()}{revoked}")
        print("  " + "\n  ".join(_fingerprint_lines(k.fingerprint)))
    counts = store.verification_counts(agent_id)
    print("messages: " + ", ".join(f"{n} {status}" for status, n in counts.items()))
    for h in store.held_messages(agent_id):
        print(f"  seq {h.seq} ({h.kind}, produced {h.produced_at.isoformat()}): {h.status}: {h.reason}")
    return 0
