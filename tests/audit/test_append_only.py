"""The audit tables refuse UPDATE, DELETE and TRUNCATE in the database itself."""

import pytest
from django.db import connection, transaction
from django.db.utils import InternalError, ProgrammingError

from audit.actions import record
from audit.actions.checkpoint import do_sign_checkpoint

pytestmark = pytest.mark.django_db

REFUSED = (InternalError, ProgrammingError)


def refused(sql, params=()):
    with (
        pytest.raises(REFUSED, match="append-only") as error,
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(sql, params)
    return error


def test_raw_update_and_delete_of_an_event_fail(publisher):
    event = record("members.key.revoked", actor_org=publisher.org)
    refused("UPDATE audit_auditevent SET action = 'nothing.happened' WHERE id = %s", [event.pk])
    refused("DELETE FROM audit_auditevent WHERE id = %s", [event.pk])
    event.refresh_from_db()
    assert event.action == "members.key.revoked"


def test_truncate_fails(publisher):
    record("members.key.revoked", actor_org=publisher.org)
    with transaction.atomic(), connection.cursor() as cursor:
        # The test database allows TRUNCATE for resetting between tests; production has no such
        # setting: take it away here.
        cursor.execute("SET LOCAL hashx.audit_allow_truncate = 'off'")
        with pytest.raises(REFUSED, match="append-only"), transaction.atomic():
            cursor.execute("TRUNCATE audit_auditevent CASCADE")


@pytest.mark.django_db(transaction=True)
def test_seals_and_checkpoints_are_append_only_too(publisher, sealed):
    record("members.key.revoked", actor_org=publisher.org)
    sealed()
    do_sign_checkpoint()
    refused("UPDATE audit_auditseal SET hash = repeat('0', 64)")
    refused("DELETE FROM audit_auditseal")
    refused("UPDATE audit_auditcheckpoint SET tree_size = 0")
    refused("DELETE FROM audit_auditcheckpoint")
