from typing import Any

from rest_framework import serializers

from audit.actions.checkpoint import checkpoint_document
from audit.actions.record import event_document
from audit.models import AuditCheckpoint, AuditEvent


class AuditEventSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    occurred_at = serializers.CharField()
    action = serializers.CharField(help_text="dotted, e.g. `members.key.revoked`, `feed.pulled`")
    actor_org = serializers.CharField(allow_null=True, help_text="slug of the acting organisation")
    actor_key_id = serializers.CharField(help_text="key id (RFC 7638 thumbprint) that signed")
    actor_staff = serializers.BooleanField(help_text="true when coalition staff acted")
    ip = serializers.CharField(allow_null=True)
    request_id = serializers.CharField()
    object_type = serializers.CharField()
    object_id = serializers.CharField()
    owner_org = serializers.CharField(
        allow_null=True, help_text="slug of the organisation owning the object"
    )
    details = serializers.DictField()
    seq = serializers.IntegerField(
        allow_null=True, help_text="place in the hash chain (null until sealed)"
    )
    hash = serializers.CharField(allow_null=True)

    def to_representation(self, instance: AuditEvent) -> dict[str, Any]:
        doc = event_document(instance)
        seal = getattr(instance, "seal", None)
        slugs: dict[int, str] = self.context.get("org_slugs", {})
        return {
            **{
                k: doc[k]
                for k in ("id", "occurred_at", "action", "actor_key_id", "ip", "request_id")
            },
            "actor_org": slugs.get(doc["actor_org"]) if doc["actor_org"] else None,
            # Members see that staff acted, not which staff member.
            "actor_staff": doc["actor_user"] is not None,
            "object_type": doc["object_type"],
            "object_id": doc["object_id"],
            "owner_org": slugs.get(doc["owner_org"]) if doc["owner_org"] else None,
            "details": doc["details"],
            "seq": seal.seq if seal else None,
            "hash": seal.hash if seal else None,
        }


class CheckpointSerializer(serializers.Serializer):
    exchange_id = serializers.CharField()
    tree_size = serializers.IntegerField(help_text="events in the chain when signed")
    head_hash = serializers.CharField(help_text="hash of event `tree_size` (64 zeros when empty)")
    issued_at = serializers.CharField()
    kid = serializers.CharField(help_text="exchange key at /.well-known/hashx that signed")
    alg = serializers.CharField(help_text="`EdDSA` (Ed25519)")
    signature = serializers.CharField(
        help_text="base64url Ed25519 signature over the canonical JSON (sorted keys, no "
        "whitespace) of exchange_id, tree_size, head_hash, issued_at and kid"
    )

    def to_representation(self, instance: AuditCheckpoint) -> dict[str, Any]:
        return {**checkpoint_document(instance), "alg": "EdDSA", "signature": instance.signature}
