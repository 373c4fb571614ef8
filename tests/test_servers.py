"""The throwaway servers the tests start (tests/servers.py) listen on loopback and work."""

from __future__ import annotations

import psycopg
import redis
from servers import PostgresServer


def test_postgres_listens_on_loopback_and_survives_a_restart(postgres: PostgresServer) -> None:
    with psycopg.connect(postgres.dsn, autocommit=True) as connection:
        row = connection.execute(
            "SELECT inet_server_addr()::text, current_setting('port')"
        ).fetchone()
    assert row == ("127.0.0.1/32", str(postgres.port))
    postgres.restart()
    with psycopg.connect(postgres.dsn, autocommit=True) as connection:
        assert connection.execute("SELECT 1").fetchone() == (1,)


def test_redis_listens_on_loopback_and_saves_nothing(redis_server_url: str) -> None:
    client = redis.Redis.from_url(redis_server_url)
    try:
        assert client.config_get("bind")["bind"] == "127.0.0.1"
        assert client.config_get("save")["save"] == ""
        assert client.set("fsaga-test", "1")
    finally:
        client.close()
