import json
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from hashx.keys import public_jwk
from members.models import Organisation, SigningKey


# Plain serializers, not ModelSerializer: these run on every whoami and key listing, and
# ModelSerializer rebuilds its fields from the model on each use (~0.5 ms).
class OrganisationSerializer(serializers.Serializer):
    slug = serializers.SlugField()
    name = serializers.CharField()
    kind = serializers.ChoiceField(choices=Organisation.Kind.choices)
    status = serializers.ChoiceField(choices=Organisation.Status.choices)


class KeySerializer(serializers.Serializer):
    key_id = serializers.CharField(help_text="RFC 7638 thumbprint: the keyid of signatures")
    label = serializers.CharField()  # type: ignore[assignment]
    state = serializers.ChoiceField(choices=SigningKey.State.choices)
    read_only = serializers.BooleanField()  # type: ignore[assignment]
    public_key = serializers.SerializerMethodField(help_text="the public key as a JWK")
    created_at = serializers.DateTimeField()
    last_used_at = serializers.DateTimeField(allow_null=True, help_text="to the minute")
    not_after = serializers.DateTimeField(
        allow_null=True, help_text="a retiring key works until then"
    )
    revoked_at = serializers.DateTimeField(allow_null=True)
    revoked_reason = serializers.CharField()

    def get_public_key(self, key: SigningKey) -> dict[str, str]:
        return public_jwk(bytes(key.public_key))


_MOMENT = serializers.DateTimeField()  # stateless: its to_representation formats a datetime


def _moment(value: Any) -> str | None:
    return None if value is None else _MOMENT.to_representation(value)


def whoami_document(organisation: Organisation, key: SigningKey) -> dict[str, Any]:
    """What ``WhoamiSerializer`` makes of them (the schema's source, and the test's measure),
    built directly: a signed whoami is the cheapest signed request there is, and DRF deep-copies
    every field of every serializer it instantiates (a third of the request's CPU)."""
    return {
        "organisation": {
            "slug": organisation.slug,
            "name": organisation.name,
            "kind": organisation.kind,
            "status": organisation.status,
        },
        "key": {
            "key_id": key.key_id,
            "label": key.label,
            "state": key.state,
            "read_only": key.read_only,
            "public_key": public_jwk(bytes(key.public_key)),
            "created_at": _moment(key.created_at),
            "last_used_at": _moment(key.last_used_at),
            "not_after": _moment(key.not_after),
            "revoked_at": _moment(key.revoked_at),
            "revoked_reason": key.revoked_reason,
        },
        "permissions": ["read"] if key.read_only else ["read", "write"],
    }


class WhoamiSerializer(serializers.Serializer):
    organisation = OrganisationSerializer()
    key = KeySerializer()
    permissions = serializers.ListField(
        child=serializers.CharField(), help_text="`read`, and `write` unless read-only"
    )


class ChallengeSerializer(serializers.Serializer):
    challenge = serializers.CharField(read_only=True)
    expires_in = serializers.IntegerField(read_only=True, help_text="seconds")
    statement = serializers.CharField(
        read_only=True,
        help_text="what the new key signs (UTF-8, lines joined by \\n): 'hashx key possession', "
        "'challenge=…', 'organisation=…', 'key_id=…'",
    )


@extend_schema_field({"oneOf": [{"type": "string"}, {"type": "object"}]})
class PublicKeyField(serializers.Field):
    """Accepts a PEM string, a raw base64 key, or a JWK object: at most ``MAX_LENGTH``
    characters as text (an Ed25519 public key is ~113 as PEM, ~100 as a JWK)."""

    MAX_LENGTH = 1000

    def to_internal_value(self, data: Any) -> str:
        if isinstance(data, dict):
            data = json.dumps(data)
        if not isinstance(data, str):
            raise serializers.ValidationError("expected a PEM or base64 string, or a JWK object")
        if len(data) > self.MAX_LENGTH:
            raise serializers.ValidationError(
                f"at most {self.MAX_LENGTH} characters; an Ed25519 public key needs ~120"
            )
        return data

    def to_representation(self, value: Any) -> Any:
        return value


class AddKeySerializer(serializers.Serializer):
    public_key = PublicKeyField(help_text="Ed25519 public key: PEM, raw base64, or JWK")
    # These names shadow Field attributes for the type checker only: DRF's metaclass collects them.
    label = serializers.CharField(max_length=100, required=False, default="", allow_blank=True)  # type: ignore[assignment]
    read_only = serializers.BooleanField(required=False, default=False)  # type: ignore[assignment]
    challenge = serializers.CharField(max_length=64, help_text="from POST /api/v1/keys/challenge")
    proof = serializers.CharField(
        max_length=128, help_text="base64url Ed25519 signature of the statement by the new key"
    )


class RevokeSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=1000)


class RetireSerializer(serializers.Serializer):
    not_after = serializers.DateTimeField(help_text="until when the key keeps working (≤ 90 days)")
