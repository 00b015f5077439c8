"""Migrations signals 0015 and 0016 and federation 0005 fold signals into entries: every entry
keeps its value (a long one too) with no change to its position, a resync under way keeps what
it has seen, and unapplied, the signals come back with every entry pointing to its own."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from federation.models import MirroredSet, Peer
from signals.actions.sets import do_create_set
from tests.signals.conftest import PDQ

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("signals", "0014_entry_contributor"), ("federation", "0004_mirrors_per_origin_set")]
LONG = "x" * 300  # past the 256 bytes that are their own key in the unique index

_ENTRY = (
    "INSERT INTO signals_setentry (hash_set_id, signal_id, state, labels, contributor_count,"
    " contributor_names, positive_count, negative_count, investigation_count, first_seen,"
    " updated_at) SELECT %s, g.id, 'active', '{}', 0, '{}', 0, 0, 0, now(), now()"
    " FROM signals_signal g WHERE g.value = %s RETURNING id"
)


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)


def rows(sql, params=()):
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall() if cursor.description else []


def test_signals_are_folded_into_entries_and_come_back_when_unapplied(publisher, subscriber):
    csam = do_create_set(publisher.org, {"slug": "csam", "name": "CSAM"})
    mirror_set = do_create_set(subscriber.org, {"slug": "mirror", "name": "Mirror"})
    peer = Peer.objects.create(
        name="b", url="https://b.example", exchange_id="b", organisation=subscriber.org,
        key_id="k", public_key=b"\0" * 32,
    )  # fmt: skip
    mirror = MirroredSet.objects.create(peer=peer, remote_slug="csam", hash_set=mirror_set)
    latest = MigrationExecutor(connection).loader.graph.leaf_nodes()
    migrate(BEFORE)
    try:
        rows(
            "INSERT INTO signals_signal (type, value) VALUES ('pdq', %s), ('pdq', %s),"
            " ('raw_text', %s)",
            [PDQ[0], PDQ[1], LONG],
        )
        # One signal in two sets, one in one set, a long one.
        entries = {
            (hash_set.slug, value): rows(_ENTRY, [hash_set.pk, value])[0][0]
            for hash_set, value in [(csam, PDQ[0]), (mirror_set, PDQ[0]), (csam, PDQ[1]),
                                    (csam, LONG)]
        }  # fmt: skip
        positions = dict(rows("SELECT id, position_seq FROM signals_setentry"))
        # A resync of the mirror has seen PDQ[0]'s signal, and a signal with no entry there.
        rows(
            "INSERT INTO federation_resyncseen (mirror_id, signal_id)"
            " SELECT %s, id FROM signals_signal WHERE value IN (%s, %s)",
            [mirror.pk, PDQ[0], PDQ[1]],
        )
        migrate(latest)

        stored = rows("SELECT id, hash_set_id, type, value, position_seq FROM signals_setentry")
        assert {(e, s, t, v) for e, s, t, v, _ in stored} == {
            (entries["csam", PDQ[0]], csam.pk, "pdq", PDQ[0]),
            (entries["mirror", PDQ[0]], mirror_set.pk, "pdq", PDQ[0]),
            (entries["csam", PDQ[1]], csam.pk, "pdq", PDQ[1]),
            (entries["csam", LONG], csam.pk, "raw_text", LONG),
        }
        assert {e: p for e, *_, p in stored} == positions
        assert rows("SELECT to_regclass('signals_signal')") == [(None,)]
        assert rows("SELECT mirror_id, entry_id FROM federation_resyncseen") == [
            (mirror.pk, entries["mirror", PDQ[0]])
        ]

        migrate(BEFORE)
        assert rows(
            "SELECT e.id, g.type, g.value FROM signals_setentry e"
            " JOIN signals_signal g ON g.id = e.signal_id ORDER BY e.id"
        ) == sorted(
            (entry, "raw_text" if value == LONG else "pdq", value)
            for (_, value), entry in entries.items()
        )
        assert rows("SELECT count(*) FROM signals_signal") == [(3,)]
        assert rows(
            "SELECT g.value FROM federation_resyncseen s"
            " JOIN signals_signal g ON g.id = s.signal_id"
        ) == [(PDQ[0],)]
    finally:
        migrate(latest)
