from typing import Any

from rest_framework import serializers

from exchange.fields import BoundedList
from members.models import FeedToken
from signals.access import MAX_SETS


class CreateFeedTokenSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    sets = BoundedList(
        child=serializers.SlugField(max_length=64),
        min_length=1,
        max_length=MAX_SETS,
        help_text="slugs of sets your organisation may read",
    )
    expires_at = serializers.DateTimeField(
        required=False, help_text="default: 90 days from now; at most 366 days ahead"
    )

    def validate_sets(self, sets: list[str]) -> list[str]:
        if len(set(sets)) != len(sets):
            raise serializers.ValidationError("each set at most once")
        return sets


class FeedTokenSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    hint = serializers.CharField(help_text="the secret's first characters")
    sets = serializers.SerializerMethodField(help_text="set slugs")
    created_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField()
    revoked_at = serializers.DateTimeField(allow_null=True)
    last_used_at = serializers.DateTimeField(allow_null=True, help_text="to the minute")

    def get_sets(self, token: FeedToken) -> list[str]:
        slugs: dict[int, str] = self.context["set_slugs"]
        # A set deleted since has no slug: nothing to name.
        return sorted(slugs[i] for i in token.set_ids if i in slugs)


class NewFeedTokenSerializer(FeedTokenSerializer):
    token = serializers.CharField(help_text="the secret: shown this once, never again")

    def to_representation(self, instance: Any) -> Any:
        token, secret = instance
        return {**FeedTokenSerializer(token, context=self.context).data, "token": secret}
