"""Recompute the chain and check every checkpoint: what ``manage.py verify_audit`` runs."""

from collections.abc import Iterator
from dataclasses import dataclass, field

from audit.actions.checkpoint import verify_checkpoint_signature
from audit.actions.seal import GENESIS_HASH, chain_hash
from audit.models import AuditCheckpoint, AuditEvent, AuditSeal, AuditSealerState


@dataclass
class Report:
    events: int = 0
    sealed: int = 0
    unsealed: int = 0
    checkpoints: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _seals(chunk: int) -> Iterator[AuditSeal]:
    return AuditSeal.objects.select_related("event").order_by("seq").iterator(chunk_size=chunk)


def verify_audit_log(chunk: int = 5000) -> Report:
    """Walk the chain from seq 1. The first problem found in the chain stops the walk (every
    later hash depends on it) and is reported first; checkpoints are checked against the part
    of the chain that verified."""
    report = Report(events=AuditEvent.objects.count())
    checkpoints = list(AuditCheckpoint.objects.order_by("id"))
    wanted = {cp.tree_size for cp in checkpoints}
    heads: dict[int, str] = {0: GENESIS_HASH}
    prev, expected = GENESIS_HASH, 1
    for seal in _seals(chunk):
        if seal.seq != expected:
            report.problems.append(
                f"seq {expected} is missing (the chain jumps to seq {seal.seq}, "
                f"event {seal.event_id}): events were removed"
            )
            break
        if chain_hash(prev, seal.seq, seal.event) != seal.hash:
            report.problems.append(
                f"event {seal.event_id} (seq {seal.seq}, {seal.event.action}) does not match its "
                "hash: the event or the chain was altered from here on"
            )
            break
        prev = seal.hash
        if seal.seq in wanted:
            heads[seal.seq] = seal.hash
        report.sealed = seal.seq
        expected += 1

    for cp in checkpoints:
        report.checkpoints += 1
        if not verify_checkpoint_signature(cp):
            report.problems.append(f"checkpoint {cp.pk} (tree size {cp.tree_size}): bad signature")
        elif cp.tree_size > report.sealed and report.ok:
            report.problems.append(
                f"checkpoint {cp.pk} vouches for {cp.tree_size} events but the chain holds "
                f"{report.sealed}: events were removed from the end"
            )
        elif cp.tree_size in heads and heads[cp.tree_size] != cp.head_hash:
            report.problems.append(
                f"checkpoint {cp.pk} (tree size {cp.tree_size}): head hash differs from the chain: "
                "the chain was rewritten"
            )

    floor = AuditSealerState.objects.filter(id=1).values_list("xid_floor", flat=True).first() or 0
    unsealed = AuditEvent.objects.filter(seal__isnull=True)
    report.unsealed = unsealed.count()
    stale = unsealed.filter(xid__lt=floor).order_by("id").first()
    if stale is not None:
        report.problems.append(
            f"event {stale.pk} ({stale.action}) is older than sealed events but has no seal: "
            "its seal was removed"
        )
    return report
