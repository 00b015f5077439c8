from rest_framework import serializers


class HealthSerializer(serializers.Serializer):
    status = serializers.CharField()


class CheckSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    detail = serializers.CharField()


class ReadinessSerializer(serializers.Serializer):
    status = serializers.CharField(help_text="`ready`")
    checks = serializers.DictField(child=CheckSerializer(), help_text="database, redis, worker")


class JWKSerializer(serializers.Serializer):
    kty = serializers.CharField()
    crv = serializers.CharField()
    x = serializers.CharField()
    kid = serializers.CharField(help_text="RFC 7638 thumbprint (SHA-256, base64url)")
    alg = serializers.CharField()
    use = serializers.CharField()


class JWKSSerializer(serializers.Serializer):
    keys = JWKSerializer(many=True)


class WellKnownSerializer(serializers.Serializer):
    exchange_id = serializers.CharField()
    name = serializers.CharField()
    api_version = serializers.CharField()
    api_root = serializers.URLField()
    jwks = JWKSSerializer()
    key_endorsements = serializers.ListField(
        child=serializers.DictField(child=serializers.CharField()),
        help_text="during a key rotation: the next key (kid), the key that vouches for it (by) and"
        " its Ed25519 signature (base64url) of 'hashx-key-change\\n<exchange_id>\\n<kid>'",
    )
    signal_types = serializers.ListField(child=serializers.DictField())


class ProblemTypeSerializer(serializers.Serializer):
    type = serializers.URLField()
    title = serializers.CharField()
    status = serializers.IntegerField()
    happened = serializers.CharField(help_text="what an answer of this type means")
    cause = serializers.CharField(help_text="the usual cause")
    fix = serializers.CharField(help_text="how to fix it")
    example = serializers.CharField(help_text="a request that gets it right")
