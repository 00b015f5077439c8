"""A python-threatexchange extension: the ``hashx`` SignalExchangeAPI, so the ``threatexchange``
CLI and HMA (hasher-matcher-actioner) fetch from a Hash Exchange and report opinions back.

    pip install './client[threatexchange]'
    threatexchange config extensions add hashx.threatexchange
    HASHX_KEY=acme.pem threatexchange config collab edit hashx acme --create \\
        --url https://hashx.example.org --sets acme-csam,gifct-terror
    HASHX_KEY=acme.pem threatexchange fetch

A first fetch reads each set's snapshot (``GET /api/v1/sets/{slug}/snapshot``); from then on
it follows the change feed (``GET /api/v1/changes``) for the collab's sets from the first
snapshot's cursor. Each page is one ``FetchDelta``, keyed by the exchange's entry id, with a
tombstone (retraction or expiry) as ``None``; the checkpoint holds the cursor. A cursor older
than the exchange's tombstone retention cannot be resumed (410 ``cursor-expired``), and a collab
whose sets changed cannot either: the checkpoint then turns stale, and the next fetch drops the
local copy and starts again from snapshots.

No ``from __future__ import annotations`` here: the threatexchange CLI builds its
``config collab edit`` flags from the runtime types of the collab config's fields.
"""

import time
import typing as t
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from threatexchange.exchanges import auth
from threatexchange.exchanges import fetch_state as state
from threatexchange.exchanges.collab_config import CollaborationConfigWithDefaults
from threatexchange.exchanges.signal_exchange_api import SignalExchangeAPI
from threatexchange.extensions.manifest import ThreatExchangeExtensionManifest
from threatexchange.signal_type.signal_base import SignalType

from hashx.client import Client
from hashx.errors import HashxError
from hashx.keys import load_private_key, load_private_key_pem

API_NAME = "hashx"
# The exchange's default HASHX_TOMBSTONE_RETENTION_DAYS: a cursor not advanced for longer may
# have missed purged tombstones. An exchange configured shorter answers 410, which also counts.
TOMBSTONE_RETENTION_SECONDS = 90 * 24 * 3600
# HMA gives one collab 240 s per fetch run and commits what it has; a page of 1,000 changes is
# one quick request, so every run makes progress however slow the link.
DEFAULT_PAGE_SIZE = 1000
MAX_PAGE_SIZE = 10_000

# Exchange type name -> python-threatexchange type name, where they differ. The package has no
# plain file-hash types: its video_md5 / video_sha256 are the MD5 / SHA-256 of a file's bytes,
# in the same format as the exchange's md5 / sha256. Every other type maps by its own name
# (pdq, video_md5, url, raw_text, and photodna, vpdq, … from extensions).
_TX_NAME_OF = {"md5": "video_md5", "sha256": "video_sha256"}

_CATEGORY_OF = {
    state.SignalOpinionCategory.POSITIVE_CLASS: "positive",
    state.SignalOpinionCategory.NEGATIVE_CLASS: "negative",
    state.SignalOpinionCategory.INVESTIGATION_SEED: "investigation_seed",
}


def tx_name_of(exchange_type: str) -> str:
    return _TX_NAME_OF.get(exchange_type, exchange_type)


def exchange_names_of(tx_type: type[SignalType]) -> list[str]:
    """The exchange type names that map onto a python-threatexchange type."""
    name = tx_type.get_name()
    return [name, *(ours for ours, theirs in _TX_NAME_OF.items() if theirs == name)]


@dataclass
class _HashxCollabRequired:
    url: str = field(metadata={"help": "the exchange's base URL, e.g. https://hashx.example.org"})
    sets: list[str] = field(metadata={"help": "slugs of the sets to fetch", "metavar": "SLUG,…"})


@dataclass
class HashxCollabConfig(CollaborationConfigWithDefaults, _HashxCollabRequired):
    """Which exchange and sets a collab follows. Stored as JSON by the CLI and HMA."""

    api: str = field(init=False, default=API_NAME)
    signal_types: list[str] = field(
        default_factory=list,
        metadata={"help": "only these exchange signal types (default: all)", "metavar": "TYPE,…"},
    )
    page_size: int = field(
        default=DEFAULT_PAGE_SIZE, metadata={"help": "changes per request (1 to 10,000)"}
    )


@dataclass
class HashxCheckpoint(state.FetchCheckpointBase):
    """Where a fetch resumes. ``cursor`` is the feed cursor, empty while the first snapshots are
    still being read (``snapshot_sets`` are done, ``snapshot_cursor`` is where the feed will
    start). ``progress_ts`` (the newest change time seen) never goes backwards; ``fresh_ts`` is
    the time up to which every change has been seen, which bounds how long the cursor stays
    valid; ``expired`` records a 410 or a change of the collab's sets."""

    cursor: str = ""
    progress_ts: int = 0
    fresh_ts: int = 0
    expired: bool = False
    sets: list[str] = field(default_factory=list)
    snapshot_sets: list[str] = field(default_factory=list)
    snapshot_cursor: str = ""

    def is_stale(self) -> bool:
        return self.expired or time.time() - self.fresh_ts > TOMBSTONE_RETENTION_SECONDS

    def get_progress_timestamp(self) -> int | None:
        return self.progress_ts or None


@dataclass
class HashxSignalMetadata(state.FetchedSignalMetadata):
    """One set entry as the feed served it: what matching needs to decide, and what an opinion
    needs to find its way back. ``sets`` has one slug, or several once entries of one signal in
    several sets of a collab are merged for indexing."""

    entry: int
    sets: list[str]
    type: str
    value: str
    labels: list[str] = field(default_factory=list)
    contributors: int = 0
    positive: int = 0
    negative: int = 0
    investigation_seed: int = 0
    updated: int = 0

    def get_as_opinions(self) -> t.Sequence[state.SignalOpinion]:
        """Contributions are positive opinions (tagged with the entry's labels); members' own
        opinions add negative and investigation-seed ones, so a mix reads as disputed."""
        tags = set(self.labels)
        opinions = []
        if self.contributors or self.positive:
            opinions.append(
                state.SignalOpinion(False, state.SignalOpinionCategory.POSITIVE_CLASS, tags)
            )
        if self.negative:
            opinions.append(
                state.SignalOpinion(False, state.SignalOpinionCategory.NEGATIVE_CLASS, tags)
            )
        if self.investigation_seed:
            opinions.append(
                state.SignalOpinion(False, state.SignalOpinionCategory.INVESTIGATION_SEED, tags)
            )
        return opinions or [state.SignalOpinion.get_trivial()]

    @classmethod
    def from_change(cls, change: dict[str, t.Any]) -> "HashxSignalMetadata":
        opinions = change.get("opinions") or {}
        return cls(
            entry=int(change["entry"]),
            sets=[change["set"]],
            type=change["type"],
            value=change["value"],
            labels=list(change.get("labels") or []),
            contributors=int(change.get("contributors") or 0),
            positive=int(opinions.get("positive", 0)),
            negative=int(opinions.get("negative", 0)),
            investigation_seed=int(opinions.get("investigation_seed", 0)),
            updated=_timestamp(change.get("updated")),
        )

    def merged(self, other: "HashxSignalMetadata") -> "HashxSignalMetadata":
        """One signal held by entries of several sets: their sets, labels and counts together."""
        return HashxSignalMetadata(
            entry=min(self.entry, other.entry),
            sets=sorted({*self.sets, *other.sets}),
            type=self.type,
            value=self.value,
            labels=sorted({*self.labels, *other.labels}),
            contributors=self.contributors + other.contributors,
            positive=self.positive + other.positive,
            negative=self.negative + other.negative,
            investigation_seed=self.investigation_seed + other.investigation_seed,
            updated=max(self.updated, other.updated),
        )


@dataclass
class HashxCredentials(auth.CredentialHelper):
    """The member's Ed25519 private key: ``HASHX_KEY`` (as for the ``hashx`` CLI) or the file
    ``~/.hashx_key`` holds its path, or the PEM itself (handy for secrets in HMA)."""

    ENV_VARIABLE: t.ClassVar[str] = "HASHX_KEY"
    FILE_NAME: t.ClassVar[str] = "~/.hashx_key"

    key: str = field(metadata={"help": "path of the PEM private key, or the PEM itself"})

    @classmethod
    def _from_str(cls, s: str) -> "HashxCredentials":
        return cls(s.strip())

    def _are_valid(self) -> bool:
        self.private_key()  # raises, with the reason, when the key cannot be loaded
        return True

    def private_key(self) -> Ed25519PrivateKey:
        if self.key.startswith("-----BEGIN"):
            return load_private_key_pem(self.key.encode())
        return load_private_key(Path(self.key).expanduser())


_Delta = state.FetchDelta[int, HashxSignalMetadata, HashxCheckpoint]


class HashxSignalExchangeAPI(
    auth.SignalExchangeWithAuth[HashxCollabConfig, HashxCredentials],
    SignalExchangeAPI[
        HashxCollabConfig, HashxCheckpoint, HashxSignalMetadata, int, HashxSignalMetadata
    ],
):
    """A Hash Exchange's change feed as a SignalExchangeAPI (see the module docstring)."""

    def __init__(self, collab: HashxCollabConfig, client: Client) -> None:
        self.collab = collab
        self.client = client

    @classmethod
    def for_collab(
        cls, collab: HashxCollabConfig, credentials: HashxCredentials | None = None
    ) -> "HashxSignalExchangeAPI":
        credentials = credentials or HashxCredentials.get(cls)
        return cls(collab, Client(collab.url, credentials.private_key()))

    @classmethod
    def get_name(cls) -> str:
        return API_NAME

    @staticmethod
    def get_config_cls() -> type[HashxCollabConfig]:
        return HashxCollabConfig

    @staticmethod
    def get_checkpoint_cls() -> type[HashxCheckpoint]:
        return HashxCheckpoint

    @staticmethod
    def get_record_cls() -> type[HashxSignalMetadata]:
        return HashxSignalMetadata

    @staticmethod
    def get_credential_cls() -> type[HashxCredentials]:
        return HashxCredentials

    def fetch_iter(
        self,
        supported_signal_types: t.Sequence[type[SignalType]],
        checkpoint: HashxCheckpoint | None,
    ) -> t.Iterator[_Delta]:
        """Snapshots first (see the module docstring), then one delta per feed page in feed
        order, until the feed has nothing more. Changes of types this caller cannot use (or the
        collab leaves out) come as deletions, so a type dropped from the collab also leaves."""
        sets = sorted(self.collab.sets)
        if not sets:
            raise ValueError(f"collab {self.collab.name} names no sets to fetch")
        if checkpoint is not None and checkpoint.sets != sets:
            yield state.FetchDelta({}, _expired(checkpoint))
            return
        usable = self._usable(supported_signal_types)
        if checkpoint is None or not checkpoint.cursor:
            for delta in self._snapshots(usable, checkpoint, sets):
                checkpoint = delta.checkpoint
                yield delta
        assert checkpoint is not None
        while True:
            try:
                page = self.client.changes(
                    sets=sets, cursor=checkpoint.cursor, limit=self._page_size()
                )
            except HashxError as exc:
                if exc.status != 410:
                    raise
                yield state.FetchDelta({}, _expired(checkpoint))
                return
            updates: dict[int, HashxSignalMetadata | None] = {}
            progress = checkpoint.progress_ts
            for change in page["changes"]:
                record = HashxSignalMetadata.from_change(change)
                progress = max(progress, record.updated)
                keep = change["state"] == "active" and usable(record)
                updates[record.entry] = record if keep else None
            # Once the feed is drained, every change up to now has been seen.
            fresh = int(time.time()) if not page["more"] else checkpoint.fresh_ts
            checkpoint = HashxCheckpoint(page["cursor"], progress, fresh, sets=sets)
            yield state.FetchDelta(updates, checkpoint)
            if not page["more"]:
                return

    def _page_size(self) -> int:
        """The collab's page size, within what the exchange serves (1 to 10,000)."""
        return min(max(self.collab.page_size, 1), MAX_PAGE_SIZE)

    def _usable(
        self, supported_signal_types: t.Sequence[type[SignalType]]
    ) -> t.Callable[[HashxSignalMetadata], bool]:
        wanted = {st.get_name() for st in supported_signal_types}
        only = set(self.collab.signal_types)
        return lambda r: tx_name_of(r.type) in wanted and (not only or r.type in only)

    def _snapshots(
        self,
        usable: t.Callable[[HashxSignalMetadata], bool],
        checkpoint: HashxCheckpoint | None,
        sets: list[str],
    ) -> t.Iterator[_Delta]:
        """Each set's snapshot not read yet, in pages of ``page_size`` entries. The feed then
        starts from the first snapshot's cursor: snapshots taken later start no earlier, so
        nothing is missed (changes between them come twice, which is harmless)."""
        done = list(checkpoint.snapshot_sets) if checkpoint else []
        first_cursor = checkpoint.snapshot_cursor if checkpoint else ""
        progress = checkpoint.progress_ts if checkpoint else 0
        started = checkpoint.fresh_ts if checkpoint else int(time.time())
        for slug in sets:
            if slug in done:
                continue
            updates: dict[int, HashxSignalMetadata | None] = {}
            for item in self.client.snapshot(slug):
                if item.get("end"):
                    done.append(slug)
                    first_cursor = first_cursor or item["cursor"]
                    break
                record = HashxSignalMetadata.from_change(item)
                progress = max(progress, record.updated)
                if usable(record):
                    updates[record.entry] = record
                if len(updates) >= self._page_size():
                    # Resuming from here reads this set's snapshot again, from its start.
                    yield state.FetchDelta(
                        updates,
                        HashxCheckpoint("", progress, started, False, sets, done[:], first_cursor),
                    )
                    updates = {}
            yield state.FetchDelta(
                updates, HashxCheckpoint("", progress, started, False, sets, done[:], first_cursor)
            )
        yield state.FetchDelta({}, HashxCheckpoint(first_cursor, progress, started, sets=sets))

    @classmethod
    def naive_convert_to_signal_type(
        cls,
        signal_types: t.Sequence[type[SignalType]],
        collab: HashxCollabConfig,
        fetched: t.Mapping[int, HashxSignalMetadata | None],
    ) -> dict[type[SignalType], dict[str, HashxSignalMetadata]]:
        by_name = {st.get_name(): st for st in signal_types}
        only = set(collab.signal_types)
        converted: dict[type[SignalType], dict[str, HashxSignalMetadata]] = {}
        for record in fetched.values():
            if record is None:
                continue
            s_type = by_name.get(tx_name_of(record.type))
            if s_type is None or (only and record.type not in only):
                continue
            try:
                value = s_type.validate_signal_str(record.value)
            except ValueError:
                continue  # a type the exchange spells more loosely than this version checks
            signals = converted.setdefault(s_type, {})
            held = signals.get(value)
            signals[value] = record if held is None else held.merged(record)
        return converted

    def report_opinion(
        self, s_type: type[SignalType], signal: str, opinion: state.SignalOpinion
    ) -> None:
        """Give the opinion on the signal in every set of the collab that holds it."""
        category = _CATEGORY_OF[state.SignalOpinionCategory(opinion.category)]
        items = [
            {"type": name, "value": signal, "category": category, "tags": sorted(opinion.tags)}
            for name in exchange_names_of(s_type)
        ]
        accepted = 0
        for slug in self.collab.sets:
            accepted += self.client.opinions(slug, items)["accepted"]
        if not accepted:
            raise ValueError(f"no set of {self.collab.name} holds {s_type.get_name()} {signal}")


def _expired(checkpoint: HashxCheckpoint) -> HashxCheckpoint:
    """The same place, marked stale: the next fetch starts again from snapshots."""
    return HashxCheckpoint(
        checkpoint.cursor, checkpoint.progress_ts, checkpoint.fresh_ts, True, checkpoint.sets
    )


def _timestamp(value: t.Any) -> int:
    """Unix seconds of an ISO 8601 time from the feed (0 when absent)."""
    if not value:
        return 0
    return int(datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp())


TX_MANIFEST = ThreatExchangeExtensionManifest(apis=(HashxSignalExchangeAPI,))
