"""Serving the web app: next to the MQTT consumer (`edgeproof ingest --http-port N`) or on its own
(`edgeproof web --db PATH --http-port N`). Uvicorn runs in a thread of its own; `stop()` asks it to
finish the requests in flight and waits for it.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading

from cloud_ingest.cli import _add_common, _setup_logging, stop_on_signals
from cloud_ingest.dialect import StoreTarget, mask

log = logging.getLogger(__name__)

DEFAULT_LISTEN = "127.0.0.1"


class WebConfigError(RuntimeError):
    """The web app cannot start as configured; str() is ready for a user."""


def add_web_arguments(parser: argparse.ArgumentParser) -> None:
    """--http-port, --http-listen, --no-auth (shared by `edgeproof ingest` and `edgeproof web`)."""
    parser.add_argument(
        "--http-port", type=int, default=None, help="serve the evaluator's web app on this port (docs/web.md)"
    )
    parser.add_argument(
        "--http-listen",
        default=DEFAULT_LISTEN,
        help=f"address of the web app (default: {DEFAULT_LISTEN}; put TLS in front otherwise)",
    )
    parser.add_argument(
        "--no-auth",
        action="store_true",
        help="serve the web app without accounts (`edgeproof user add`): anyone who reaches it reads everything",
    )


class WebServer:
    """Uvicorn in a daemon thread."""

    def __init__(self, db_path: StoreTarget, host: str, port: int, auth: bool) -> None:
        import uvicorn

        from cloud_ingest.web.app import create_app

        config = uvicorn.Config(
            create_app(db_path, auth=auth), host=host, port=port, log_config=None, access_log=True, lifespan="off"
        )
        self.server = uvicorn.Server(config)
        self.host, self.port = host, port
        self.thread = threading.Thread(target=self.server.run, name="web", daemon=True)

    def start(self) -> WebServer:
        self.thread.start()
        log.info("web app serving url=http://%s:%d/", self.host, self.port)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        log.info("web app stopped")


def prepare(db_path: StoreTarget, no_auth: bool) -> bool:
    """Whether to ask for accounts; raises WebConfigError when the app must not start."""
    from cloud_ingest.store import StoreUnavailable
    from cloud_ingest.users import read_users
    from cloud_ingest.web.data import Catalog

    try:
        Catalog(db_path).check()
    except StoreUnavailable as exc:
        raise WebConfigError(str(exc)) from None
    if no_auth:
        log.warning("web app without accounts (--no-auth): anyone who can reach the port reads every record")
        return False
    if not read_users(db_path):
        raise WebConfigError(
            f"no web accounts in {mask(db_path)}: add one with `edgeproof user add --db {mask(db_path)} NAME`, "
            "or give --no-auth"
        )
    return True


def start_web(args: argparse.Namespace) -> WebServer | None:
    """The web app next to the ingest when --http-port is given; raises WebConfigError."""
    if args.http_port is None:
        return None
    auth = prepare(args.db, args.no_auth)
    return WebServer(args.db, args.http_listen, args.http_port, auth).start()


# -- edgeproof web ------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _add_common(parser)
    add_web_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT (exit 0); exit 2 when the app cannot start."""
    _setup_logging(args.log_level)
    if args.http_port is None:
        print("web: error: give --http-port", file=sys.stderr)
        return 2
    try:
        web = start_web(args)
    except WebConfigError as exc:
        print(f"web: error: {exc}", file=sys.stderr)
        return 2
    assert web is not None
    with stop_on_signals() as stop:
        try:
            while not stop.wait(0.5):
                if not web.thread.is_alive():  # e.g. the port was taken
                    print(f"web: error: the server stopped (port {args.http_port} in use?)", file=sys.stderr)
                    return 1
            return 0
        finally:
            web.stop()
