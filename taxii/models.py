"""The partner feeds keep no tables of their own: they read the change feed (signals.feed) and
the feed tokens live with the organisations that own them (members.models.FeedToken)."""
