"""Serializer fields the apps' APIs share."""

from typing import Any

from rest_framework import serializers

from exchange.problems import Problem


class BoundedList(serializers.ListField):
    """A list of at most ``max_length`` items, counted before any item is checked: DRF's
    ListField checks every item first, so 100,000 bad ones made 100,000 errors in one answer
    (and a body of five million tiny items kept a worker busy for a minute). A longer list is a
    400 field error, or with ``too_large`` (a hint: what to send instead) a 413."""

    def __init__(self, *, max_length: int, too_large: str = "", **kwargs: Any) -> None:
        super().__init__(max_length=max_length, **kwargs)
        self.too_large = too_large

    def to_internal_value(self, data: Any) -> list[Any]:
        limit = self.max_length
        if isinstance(data, list) and limit is not None and len(data) > limit:
            if self.too_large:
                raise Problem(
                    "payload-too-large",
                    f"{len(data):,} {self.field_name} in one request; {self.too_large}",
                )
            raise serializers.ValidationError(f"at most {limit:,} items; {len(data):,} were given")
        values: list[Any] = super().to_internal_value(data)
        return values


class ParsedJSON(serializers.JSONField):
    """A value of a parsed JSON body, taken as it is: DRF's JSONField dumps every value back to
    JSON to check that it could be, which a parser's output always can (the 1,000 items of a
    match spent 10 ms there, a tenth of the request's CPU)."""

    def to_internal_value(self, data: Any) -> Any:
        return data
