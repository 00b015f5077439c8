"""The feed core: the ground floor of the signals app (DESIGN.md "Layers").

``positions`` (change positions, cursors and the order invariant), ``locks`` (the set and part
advisory locks every writer of entries takes), ``reads`` (the one reader of the change feed:
pages, NDJSON streams, snapshots and the match index's follower all read through it) and
``wakeups`` (what runs after new positions commit). It imports models and the project's ground
floor only; actions, tasks, the API and the match index import it, never the reverse.
"""
