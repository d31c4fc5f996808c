from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.netutil import Mosquitto


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    broker = Mosquitto(tmp_path)
    broker.start()
    yield broker
    broker.stop()


# -- PostgreSQL: the ingest store's second back-end (cloud_ingest/dialect.py) -----------------------

# An administrative connection that may create databases; .ci/run starts a local server with trust auth.
POSTGRES_ADMIN_ENV = "EDGEPROOF_TEST_POSTGRES"
POSTGRES_ADMIN_DEFAULT = "postgresql://127.0.0.1:5432/postgres"


def _postgres_admin() -> str:
    import os

    return os.environ.get(POSTGRES_ADMIN_ENV, POSTGRES_ADMIN_DEFAULT)


def _admin_connection() -> Any:
    import psycopg

    from cloud_ingest.dialect import mask

    admin = _postgres_admin()
    try:
        return psycopg.connect(admin, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        # fail, never skip: the PostgreSQL store is untested otherwise
        pytest.fail(
            f"PostgreSQL is not reachable at {mask(admin)}: {str(exc).strip()}. Start it (.ci/run installs and "
            f"starts it) or point ${POSTGRES_ADMIN_ENV} at a server where this user may create databases.",
            pytrace=False,
        )


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """The URL of a fresh, empty PostgreSQL database, dropped afterwards (whoever still holds it)."""
    with fresh_postgres_database() as url:
        yield url


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """`postgres_url` for fixtures of a wider scope."""
    import secrets
    from urllib.parse import urlsplit, urlunsplit

    name = f"edgeproof_test_{secrets.token_hex(6)}"
    with _admin_connection() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(urlsplit(_postgres_admin())._replace(path=f"/{name}"))
    finally:
        with _admin_connection() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def store_target(request: pytest.FixtureRequest, tmp_path: Path) -> str | Path:
    """Where a test's ingest Store lives: a SQLite file, then a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return tmp_path / "ingest.sqlite"
    return str(request.getfixturevalue("postgres_url"))
