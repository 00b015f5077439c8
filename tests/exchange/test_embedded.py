"""Embedded services: a second user of the same data directory shares them and, when it
stops, leaves them running for the first (`make manage` beside `make run`)."""

import psycopg2
import redis

from exchange.embedded import SERVER_SETTINGS, EmbeddedPostgres, EmbeddedRedis


def answers(pg_url, redis_url):
    try:
        psycopg2.connect(pg_url, connect_timeout=2).close()
        redis.Redis.from_url(redis_url, socket_connect_timeout=1).ping()
    except (psycopg2.Error, redis.RedisError):
        return False
    return True


def test_a_second_user_shares_the_services_and_leaves_them_running(tmp_path):
    first_pg, first_redis = EmbeddedPostgres(tmp_path), EmbeddedRedis(tmp_path)
    urls = first_pg.start(), first_redis.start()
    (tmp_path / "embedded.json").write_text(
        f'{{"DATABASE_URL": "{urls[0]}", "REDIS_URL": "{urls[1]}"}}'
    )
    try:
        second_pg, second_redis = EmbeddedPostgres(tmp_path), EmbeddedRedis(tmp_path)
        assert (second_pg.start(), second_redis.start()) == urls
        assert not second_pg.owned and not second_redis.owned
        second_redis.stop()
        second_pg.stop()
        assert answers(*urls)
    finally:
        first_redis.stop()
        first_pg.stop()
    assert not answers(*urls)


def test_postgres_runs_with_the_server_settings(tmp_path):
    postgres = EmbeddedPostgres(tmp_path)
    url = postgres.start()
    try:
        with psycopg2.connect(url) as conn, conn.cursor() as cursor:
            for name, value in SERVER_SETTINGS.items():
                cursor.execute(f"SHOW {name}")
                assert cursor.fetchone() == (value,)
        conn.close()
    finally:
        postgres.stop()
