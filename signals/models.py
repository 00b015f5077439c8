"""Signal types, sets, entries, change feed: built by the signals issue."""
