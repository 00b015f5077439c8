"""verify_audit passes on an honest log and names the first bad event on a tampered one."""

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from audit.actions import record
from audit.actions.checkpoint import do_sign_checkpoint
from audit.models import AuditSeal

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def honest_log(publisher, sealed):
    events = [record("test.event", actor_org=publisher.org, details={"n": n}) for n in range(6)]
    sealed()
    do_sign_checkpoint()
    return events


def seq_of(event):
    return AuditSeal.objects.get(event=event).seq


def tamper(sql, params=()):
    """What a database superuser could do: switch the append-only triggers off and write."""
    with connection.cursor() as cursor:
        for table in ("audit_auditevent", "audit_auditseal", "audit_auditcheckpoint"):
            cursor.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
        try:
            cursor.execute(sql, params)
        finally:
            for table in ("audit_auditevent", "audit_auditseal", "audit_auditcheckpoint"):
                cursor.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")


def verify_fails():
    with pytest.raises(CommandError) as error:
        call_command("verify_audit")
    return str(error.value)


def test_an_honest_log_verifies(honest_log, capsys):
    call_command("verify_audit")
    out = capsys.readouterr().out
    assert "audit log OK" in out and "1 checkpoints" in out
    assert f"{AuditSeal.objects.count()} sealed" in out


def test_an_altered_event_is_named(honest_log):
    victim = honest_log[3]
    tamper("UPDATE audit_auditevent SET details = '{\"n\": 99}' WHERE id = %s", [victim.pk])
    assert f"event {victim.pk} (seq {seq_of(victim)}," in verify_fails()


def test_an_altered_actor_is_named(honest_log, subscriber):
    victim = honest_log[1]
    tamper(
        "UPDATE audit_auditevent SET actor_org_id = %s WHERE id = %s",
        [subscriber.org.pk, victim.pk],
    )
    assert f"event {victim.pk} (seq {seq_of(victim)}," in verify_fails()


def test_a_removed_event_in_the_middle_is_found(honest_log):
    victim = honest_log[2]
    seq = seq_of(victim)
    tamper("DELETE FROM audit_auditseal WHERE event_id = %s", [victim.pk])
    tamper("DELETE FROM audit_auditevent WHERE id = %s", [victim.pk])
    assert f"seq {seq} is missing" in verify_fails()


def test_events_removed_from_the_end_are_found_by_the_checkpoint(honest_log):
    size = AuditSeal.objects.count()
    for victim in honest_log[-2:]:
        tamper("DELETE FROM audit_auditseal WHERE event_id = %s", [victim.pk])
        tamper("DELETE FROM audit_auditevent WHERE id = %s", [victim.pk])
    assert f"vouches for {size} events but the chain holds {size - 2}" in verify_fails()


def test_a_rewritten_chain_is_caught_by_the_signed_checkpoint(honest_log):
    # Rehash everything after a change: the chain is self-consistent again, the signature is not.
    from audit.actions.seal import GENESIS_HASH, chain_hash

    tamper("UPDATE audit_auditevent SET action = 'test.innocent' WHERE id = %s", [honest_log[0].pk])
    prev = GENESIS_HASH
    for seal in AuditSeal.objects.select_related("event").order_by("seq"):
        prev = chain_hash(prev, seal.seq, seal.event)
        tamper("UPDATE audit_auditseal SET hash = %s WHERE seq = %s", [prev, seal.seq])
    assert "head hash differs from the chain" in verify_fails()


def test_a_forged_checkpoint_signature_is_found(honest_log):
    tamper("UPDATE audit_auditcheckpoint SET tree_size = tree_size - 1")
    assert "bad signature" in verify_fails()
