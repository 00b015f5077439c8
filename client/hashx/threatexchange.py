"""A python-threatexchange extension: the ``hashx`` SignalExchangeAPI, so the ``threatexchange``
CLI and HMA (hasher-matcher-actioner) fetch from a Hash Exchange and report opinions back, and
the ``sha1`` and ``domain`` signal types python-threatexchange does not ship.

    pip install './client[threatexchange]'
    threatexchange config extensions add hashx.threatexchange
    HASHX_KEY=acme.pem threatexchange config collab edit hashx acme --create \\
        --url https://hashx.example.org --sets acme-csam,gifct-terror
    HASHX_KEY=acme.pem threatexchange fetch

A first fetch reads each set's snapshot (``GET /api/v1/sets/{slug}/snapshot``); from then on
it follows the change feed (``GET /api/v1/changes``) for the collab's sets from the first
snapshot's cursor. Each page is one ``FetchDelta``, keyed by the exchange's entry id, with a
tombstone (retraction or expiry) as ``None``; the checkpoint holds the cursor and which entries
the fetcher holds.

No fetcher keeps a retracted signal, however long it was away. A cursor older than the
exchange's tombstone retention (410 ``cursor-expired``) or a collab whose sets or types changed
makes the fetch a resync: the snapshots again, then a ``None`` for each entry the fetcher
holds that they no longer have. Fetchers never clear their own copy (HMA merges deltas into
what it has, whatever the checkpoint), so the deletions have to come from here.

No ``from __future__ import annotations`` here: the threatexchange CLI builds its
``config collab edit`` flags from the runtime types of the collab config's fields.
"""

import hashlib
import logging
import pathlib
import re
import typing as t
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from threatexchange.cli.exceptions import CommandError
from threatexchange.content_type.content_base import ContentType
from threatexchange.content_type.photo import PhotoContent
from threatexchange.content_type.url import URLContent
from threatexchange.content_type.video import VideoContent
from threatexchange.exchanges import auth
from threatexchange.exchanges import fetch_state as state
from threatexchange.exchanges.collab_config import CollaborationConfigWithDefaults
from threatexchange.exchanges.signal_exchange_api import SignalExchangeAPI
from threatexchange.extensions.manifest import ThreatExchangeExtensionManifest
from threatexchange.signal_type import index
from threatexchange.signal_type.signal_base import (
    BytesHasher,
    MatchesStr,
    SignalComparisonResult,
    SignalType,
    SimpleSignalType,
    TrivialSignalTypeIndex,
)

from hashx.client import Client
from hashx.errors import HashxError
from hashx.idset import IdSet
from hashx.keys import load_private_key, load_private_key_pem

log = logging.getLogger(__name__)

API_NAME = "hashx"
# Checkpoints of version 0 (older extensions) do not say what the fetcher holds.
CHECKPOINT_VERSION = 2
# HMA gives one collab 240 s per fetch run and commits what it has; a page of 1,000 changes is
# one quick request, so every run makes progress however slow the link.
DEFAULT_PAGE_SIZE = 1000
MAX_PAGE_SIZE = 10_000

# Exchange type name -> python-threatexchange type name, where they differ. The package has no
# plain file-hash types: its video_md5 / video_sha256 are the MD5 / SHA-256 of a file's bytes,
# in the same format as the exchange's md5 / sha256. Every other type maps by its own name:
# pdq, video_md5, url and raw_text ship with the package, sha1 and domain with this extension,
# photodna, vpdq, … with others: a ``vpdq`` value is python-threatexchange's own vPDQ
# serialisation, handed unchanged to its vpdq extension's VPDQSignal where that extension is
# enabled (``threatexchange config extensions add threatexchange.extensions.vpdq.manifest``,
# which needs Meta's ``vpdq`` package: the client's ``[video]`` extra).
_TX_NAME_OF = {"md5": "video_md5", "sha256": "video_sha256"}

_CATEGORY_OF = {
    state.SignalOpinionCategory.POSITIVE_CLASS: "positive",
    state.SignalOpinionCategory.NEGATIVE_CLASS: "negative",
    state.SignalOpinionCategory.INVESTIGATION_SEED: "investigation_seed",
}


class FileSHA1Signal(SimpleSignalType, BytesHasher):
    """The exchange's ``sha1``: the SHA-1 of a file's bytes, 40 lowercase hex digits."""

    @classmethod
    def get_name(cls) -> str:
        return "sha1"

    @classmethod
    def get_content_types(cls) -> list[type[ContentType]]:
        return [PhotoContent, VideoContent]

    @classmethod
    def get_index_cls(cls) -> type[TrivialSignalTypeIndex]:
        return TrivialSignalTypeIndex

    @classmethod
    def validate_signal_str(cls, signal_str: str) -> str:
        normalized = signal_str.strip().lower()
        if not re.fullmatch("[0-9a-f]{40}", normalized):
            raise ValueError(f"{signal_str!r} is not a SHA-1 (40 hex digits)")
        return normalized

    @classmethod
    def hash_from_file(cls, file: pathlib.Path) -> str:
        digest = hashlib.sha1(usedforsecurity=False)
        with file.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        return digest.hexdigest()

    @classmethod
    def hash_from_bytes(cls, bytes_: bytes) -> str:
        return hashlib.sha1(bytes_, usedforsecurity=False).hexdigest()

    @staticmethod
    def get_examples() -> list[str]:
        return ["da39a3ee5e6b4b0d3255bfef95601890afd80709"]


def host_of(text: str) -> str:
    """The host a URL (or a bare host name) names, lowercase, in punycode, no trailing dot."""
    text = text.strip()
    host = (urlsplit(text).hostname or "") if "://" in text else text.split("/")[0]
    host = host.rsplit("@", 1)[-1].split(":")[0].rstrip(".").lower()
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        return host


def _domains_of(text: str) -> list[str]:
    """The host of ``text`` and each domain above it with at least two labels."""
    labels = host_of(text).split(".")
    return [".".join(labels[i:]) for i in range(max(len(labels) - 1, 1))]


class DomainIndex(TrivialSignalTypeIndex[index.T]):
    """Looks a URL or host name up by its host and every domain above it, so a listed
    ``example.com`` matches ``https://cdn.example.com/x``."""

    def query(self, query: str) -> list[index.IndexMatch[index.T]]:
        return [match for domain in _domains_of(query) for match in super().query(domain)]


class DomainSignal(SimpleSignalType, MatchesStr):
    """The exchange's ``domain``: a domain name, lowercase, punycode, no trailing dot. Matches
    a URL or host name on it or below it."""

    @classmethod
    def get_name(cls) -> str:
        return "domain"

    @classmethod
    def get_content_types(cls) -> list[type[ContentType]]:
        return [URLContent]

    @classmethod
    def get_index_cls(cls) -> type[DomainIndex]:
        return DomainIndex

    @classmethod
    def validate_signal_str(cls, signal_str: str) -> str:
        domain = host_of(signal_str)
        if "." not in domain or "/" in signal_str.strip():
            raise ValueError(f"{signal_str!r} is not a domain name such as example.com")
        return domain

    @classmethod
    def matches_str(cls, signal: str, haystack: str) -> SignalComparisonResult:
        return SignalComparisonResult.from_bool_only(signal in _domains_of(haystack))

    @staticmethod
    def get_examples() -> list[str]:
        return ["example.com"]


class OpinionNotGiven(CommandError, ValueError):
    """An opinion the exchange did not take. The threatexchange CLI prints it as one line and
    exits with its return code (2: no set holds the signal, 3: the exchange refused or could
    not be reached); to other callers it is a ValueError."""


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
    """Where a fetch resumes, and which entries the fetcher holds once it has applied every
    delta up to this checkpoint (``held``, an ``IdSet``'s text), so that a resync can delete
    what the exchange no longer serves.

    ``cursor`` is the feed cursor. It is empty while the sets' snapshots are being read (a
    first fetch or a resync): ``snapshot_sets`` are read, ``seen`` holds the entries they
    served and ``snapshot_cursor`` is where the feed will start. ``sets`` and ``signal_types``
    are the collab's when the checkpoint was made; once the collab changes them, the next fetch
    resyncs. ``progress_ts`` (the newest change time seen) never goes backwards.

    Never stale: a cursor the exchange no longer serves (410) is handled inside ``fetch_iter``,
    which alone knows what to delete. Only a checkpoint of an older extension (``version`` 0,
    without ``held``) is stale, so its fetcher starts again from scratch."""

    cursor: str = ""
    progress_ts: int = 0
    sets: list[str] = field(default_factory=list)
    signal_types: list[str] = field(default_factory=list)
    held: dict[str, str] = field(default_factory=dict)
    snapshot_sets: list[str] = field(default_factory=list)
    snapshot_cursor: str = ""
    seen: dict[str, str] = field(default_factory=dict)
    version: int = 0

    def is_stale(self) -> bool:
        return self.version < CHECKPOINT_VERSION

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
        return load_private_key(pathlib.Path(self.key).expanduser())


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
        """One delta per feed page in feed order, until the feed has nothing more. Changes of
        types this caller cannot use (or the collab leaves out) come as deletions.

        A resync comes first when there is no checkpoint, when the collab's sets or types
        changed, and when the exchange no longer serves the cursor (410: tombstones purged past
        it): every set's snapshot, then a deletion of each entry the fetcher holds that none of
        them served, so the fetcher ends with exactly the active entries however it merges
        (``dict.update`` in HMA, ``naive_fetch_merge`` in the CLI) and whatever it missed."""
        sets = sorted(self.collab.sets)
        if not sets:
            raise ValueError(f"collab {self.collab.name} names no sets to fetch")
        fetch = _Fetch(
            sets,
            sorted(self.collab.signal_types),
            self._usable(supported_signal_types),
            checkpoint if checkpoint is not None and not checkpoint.is_stale() else None,
        )
        resumed = fetch.resumed
        resynced = True
        if resumed is None or fetch.scope_changed():
            cursor = yield from self._resync(fetch, [], "", IdSet())
        elif not resumed.cursor:  # a resync was interrupted: go on with it
            done = list(resumed.snapshot_sets)
            seen = IdSet(resumed.seen)
            cursor = yield from self._resync(fetch, done, resumed.snapshot_cursor, seen)
        else:
            cursor = resumed.cursor
            resynced = False
        while True:
            try:
                page = self.client.changes(sets=sets, cursor=cursor, limit=self._page_size())
            except HashxError as exc:
                if exc.status != 410 or resynced:
                    raise
                log.info("%s: the exchange no longer serves the cursor, resyncing", API_NAME)
                cursor = yield from self._resync(fetch, [], "", IdSet())
                resynced = True
                continue
            updates: dict[int, HashxSignalMetadata | None] = {}
            for change in page["changes"]:
                record = fetch.read(change)
                keep = change["state"] == "active" and fetch.usable(record)
                updates[record.entry] = record if keep else None
                fetch.hold(record.entry, keep)
            cursor = page["cursor"]
            yield state.FetchDelta(updates, fetch.checkpoint(cursor))
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

    def _resync(
        self, fetch: "_Fetch", done: list[str], first_cursor: str, seen: IdSet
    ) -> t.Generator[_Delta, None, str]:
        """Each set's snapshot not read yet (``done``), in pages of ``page_size`` entries, then
        deletions of every held entry that no snapshot served (``seen``); returns the cursor the
        feed goes on from. That is the first snapshot's cursor: snapshots taken later start no
        earlier, so nothing is missed (changes between them come twice, which is harmless), and
        an entry that comes back after its snapshot comes back through the feed, after the
        deletions. An interrupted snapshot is read again from its start."""
        page_size = self._page_size()
        for slug in fetch.sets:
            if slug in done:
                continue
            updates: dict[int, HashxSignalMetadata | None] = {}
            for item in self.client.snapshot(slug):
                if item.get("end"):
                    done.append(slug)
                    first_cursor = first_cursor or item["cursor"]
                    break
                record = fetch.read(item)
                if fetch.usable(record):
                    updates[record.entry] = record
                    fetch.hold(record.entry, True)
                    seen.add(record.entry)
                if len(updates) >= page_size:
                    yield state.FetchDelta(updates, fetch.checkpoint("", done, first_cursor, seen))
                    updates = {}
            yield state.FetchDelta(updates, fetch.checkpoint("", done, first_cursor, seen))
        gone = list(fetch.held.minus(seen))
        for start in range(0, len(gone), page_size):
            deletions: dict[int, HashxSignalMetadata | None] = {}
            for entry in gone[start : start + page_size]:
                deletions[entry] = None
                fetch.hold(entry, False)
            yield state.FetchDelta(deletions, fetch.checkpoint("", done, first_cursor, seen))
        yield state.FetchDelta({}, fetch.checkpoint(first_cursor))
        return first_cursor

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
            try:
                accepted += self.client.opinions(slug, items)["accepted"]
            except HashxError as exc:
                raise OpinionNotGiven(f"{self.collab.name}: {slug}: {exc}", 3) from exc
        if not accepted:
            raise OpinionNotGiven(
                f"{self.collab.name}: no set of {', '.join(self.collab.sets)} holds "
                f"{s_type.get_name()} {signal}",
                2,
            )


class _Fetch:
    """One run of ``fetch_iter``: the collab's scope, the entries the fetcher holds, the newest
    change time seen, and the checkpoints that record them."""

    def __init__(
        self,
        sets: list[str],
        signal_types: list[str],
        usable: t.Callable[[HashxSignalMetadata], bool],
        resumed: HashxCheckpoint | None,
    ) -> None:
        self.sets = sets
        self.signal_types = signal_types
        self.usable = usable
        self.resumed = resumed
        self.held = IdSet(resumed.held if resumed else None)
        self.progress_ts = resumed.progress_ts if resumed else 0

    def scope_changed(self) -> bool:
        assert self.resumed is not None
        return (self.resumed.sets, self.resumed.signal_types) != (self.sets, self.signal_types)

    def read(self, change: dict[str, t.Any]) -> HashxSignalMetadata:
        record = HashxSignalMetadata.from_change(change)
        self.progress_ts = max(self.progress_ts, record.updated)
        return record

    def hold(self, entry: int, held: bool) -> None:
        if held:
            self.held.add(entry)
        else:
            self.held.discard(entry)

    def checkpoint(
        self,
        cursor: str,
        snapshot_sets: list[str] | None = None,
        snapshot_cursor: str = "",
        seen: IdSet | None = None,
    ) -> HashxCheckpoint:
        return HashxCheckpoint(
            cursor=cursor,
            progress_ts=self.progress_ts,
            sets=self.sets,
            signal_types=self.signal_types,
            held=self.held.encoded(),
            snapshot_sets=list(snapshot_sets or []),
            snapshot_cursor=snapshot_cursor,
            seen=seen.encoded() if seen is not None else {},
            version=CHECKPOINT_VERSION,
        )


def _timestamp(value: t.Any) -> int:
    """Unix seconds of an ISO 8601 time from the feed (0 when absent)."""
    if not value:
        return 0
    return int(datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp())


TX_MANIFEST = ThreatExchangeExtensionManifest(
    signal_types=(FileSHA1Signal, DomainSignal), apis=(HashxSignalExchangeAPI,)
)
