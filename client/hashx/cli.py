"""``hashx``: the command line for Hash Exchange members.

Configuration, first match wins: flags (--url, --key), then the environment (HASHX_URL,
HASHX_KEY: path of your PEM private key), then a config file (see ``hashx.config``).

Output: tables, counts and file names for people; ``--json`` (before or after the command) prints
the answer as JSON for scripts, and on a refusal the problem document. Every error is one line on
standard error: ``hashx: …``, for a refusal the problem's status, title and detail.

A file name of ``-`` reads standard input, wherever the CLI reads a file (once per command).

Exit codes (``EXIT_CODES``): 0 done; 1 the exchange refused (its problem's title and detail are
printed) or could not merge a batch; 2 bad usage, a missing or unreadable key, config or input
file; 3 the exchange cannot be reached; 4 a batch was still merging when ``--wait-timeout`` ran
out; 70 an unexpected answer or a bug (``HASHX_DEBUG=1`` shows the traceback); 130 interrupted.
"""

import argparse
import json
import os
import re
import shutil
import sqlite3
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, NoReturn

import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hashx.client import Client, exchange_keys
from hashx.config import ConfigError, config_path, resolve
from hashx.errors import HashxError
from hashx.keys import (
    key_id_of,
    load_private_key,
    public_jwk,
    public_pem,
    raw_public_bytes,
    write_private_key,
)
from hashx.media import MAX_VPDQ_FRAMES, FileHash, MediaExtraMissing, file_hashes
from hashx.store import LocalStore, OtherSets, sync
from hashx.webhooks import WebhookVerificationError, verify


class UsageError(Exception):
    pass


class BatchFailed(Exception):
    """The exchange accepted a batch but could not merge it."""


class StillMerging(Exception):
    """``--wait-timeout`` ran out before the merge finished."""


STDIN = "-"


class Inputs:
    """The files a command reads. ``-`` names standard input: read once, into a temporary file
    removed when the command ends (an upload needs its size and digest before it is sent)."""

    def __init__(self, stack: ExitStack) -> None:
        self.stack = stack
        self.spooled: str | None = None

    def path(self, name: str) -> str:
        if name != STDIN:
            return name
        if self.spooled is not None:
            raise UsageError("standard input (-) can be read only once per command")
        folder = self.stack.enter_context(tempfile.TemporaryDirectory(prefix="hashx-"))
        self.spooled = str(Path(folder) / "stdin")
        with open(self.spooled, "wb") as spool:  # noqa: PTH123 - a plain copy
            shutil.copyfileobj(sys.stdin.buffer, spool)
        return self.spooled

    def read_bytes(self, name: str) -> bytes:
        try:
            return Path(self.path(name)).read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot use {shown(name)}: {exc.strerror}") from None

    def read_text(self, name: str) -> str:
        return self.read_bytes(name).decode("utf-8")


def shown(name: str) -> str:
    """A file name as messages and listings show it."""
    return "standard input" if name == STDIN else name


def _client(args: argparse.Namespace) -> Client:
    try:
        found = resolve(args.url, args.key)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    url, key_path = found.url, found.key
    if not url:
        raise UsageError(
            "no exchange URL: pass --url, set HASHX_URL (e.g. http://127.0.0.1:8000)"
            f' or put url = "…" in {config_path()}'
        )
    if not key_path:
        raise UsageError(
            "no key: pass --key, set HASHX_KEY to the path of your private key (hashx keygen)"
            f' or put key = "…" in {config_path()}'
        )
    try:
        key = load_private_key(key_path)
    except OSError as exc:
        raise UsageError(
            f"cannot read the key {key_path} (from {found.key_source}): {exc.strerror}"
        ) from None
    except ValueError as exc:
        raise UsageError(f"{key_path} is not a PEM Ed25519 private key: {exc}") from None
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"{url} (from {found.url_source}) is not an http:// or https:// URL")
    return Client(url, key, retries=max(0, args.retries))


def _print(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2) if args.json else text)


def _table(headers: list[str], rows: list[list[Any]], *, right: tuple[str, ...] = ()) -> str:
    """Columns as wide as their widest cell (counts with thousands separators: pass ids as
    strings; right-aligned in the ``right`` columns); the last column is not padded."""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(headers)]
    lines = []
    for row in [headers, *cells]:
        padded = [
            value.rjust(widths[i]) if headers[i] in right else value.ljust(widths[i])
            for i, value in enumerate(row)
        ]
        padded[-1] = row[-1]
        lines.append("  ".join(padded).rstrip())
    return "\n".join(lines)


def _cell(value: Any) -> str:
    """A value as a person reads it: no Python reprs (None is "-", lists are comma-separated,
    mappings "key=value", booleans yes/no)."""
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_cell(v) for v in value) or "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_cell(v)}" for k, v in value.items()) or "-"
    return str(value)


def _fields(record: dict[str, Any]) -> str:
    """A record as aligned ``name: value`` lines (ids as they are, counts with separators)."""
    width = max((len(k) for k in record), default=0) + 1
    return "\n".join(
        f"{k + ':':<{width}} {_cell(str(v) if _names_an_id(k, v) else v)}"
        for k, v in record.items()
    )


def _names_an_id(field: str, value: Any) -> bool:
    is_id = field in {"id", "entry", "batch", "position"} or field.endswith("_id")
    return is_id and isinstance(value, int) and not isinstance(value, bool)


def cmd_keygen(args: argparse.Namespace) -> None:
    key = Ed25519PrivateKey.generate()
    try:
        write_private_key(args.out, key)
    except FileExistsError:
        raise UsageError(f"{args.out} exists; choose another --out or remove it first") from None
    raw = raw_public_bytes(key.public_key())
    if args.public_out:
        Path(args.public_out).write_text(public_pem(raw))
    data = {"private_key_file": str(Path(args.out).resolve()), "key_id": key_id_of(key),
            "public_key_pem": public_pem(raw), "public_key_jwk": public_jwk(raw)}  # fmt: skip
    _print(
        args,
        data,
        f"private key written to {data['private_key_file']} (mode 0600: keep it secret)\n"
        f"key id: {data['key_id']}\n\n"
        f"public key (give this to the exchange staff, or use `manage.py create_member`):\n"
        f"{data['public_key_pem']}\n"
        f"as JWK: {json.dumps(data['public_key_jwk'])}",
    )


def cmd_whoami(args: argparse.Namespace) -> None:
    me = _client(args).whoami()
    org, key = me["organisation"], me["key"]
    _print(
        args,
        me,
        f"organisation: {org['slug']} ({org['name']}, {org['kind']}, {org['status']})\n"
        f"key:          {key['key_id']} ({key['state']}{', read-only' * key['read_only']})\n"
        f"permissions:  {', '.join(me['permissions'])}",
    )


def cmd_keys_list(args: argparse.Namespace) -> None:
    keys = _client(args).keys()
    lines = [f"{'KEY ID':<44} {'STATE':<9} {'RO':<3} {'LAST USED':<25} LABEL"]
    for k in keys:
        lines.append(
            f"{k['key_id']:<44} {k['state']:<9} {'yes' if k['read_only'] else '':<3} "
            f"{k['last_used_at'] or '-':<25} {k['label']}"
        )
    _print(args, keys, "\n".join(lines))


def cmd_keys_add(args: argparse.Namespace) -> None:
    try:
        new_key = load_private_key(args.inputs.path(args.new_key))
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot load the new key {shown(args.new_key)}: {exc}") from None
    added = _client(args).add_key(new_key, label=args.label, read_only=args.read_only)
    _print(args, added, f"added key {added['key_id']} ({added['state']})")


def cmd_keys_revoke(args: argparse.Namespace) -> None:
    key = _client(args).revoke_key(args.key_id, args.reason)
    _print(args, key, f"revoked key {key['key_id']}")


def cmd_keys_retire(args: argparse.Namespace) -> None:
    key = _client(args).retire_key(args.key_id, args.not_after)
    _print(args, key, f"key {key['key_id']} retires at {key['not_after']}")


_FORMATS = {"ndjson": "application/x-ndjson", "csv": "text/csv", "text": "text/plain"}


def _format_of(name: str, path: str, given: str) -> str:
    """The upload's content type: ``--format``, else the file name's suffix, else (standard
    input) its first line: a JSON object is NDJSON, ``type,value…`` a CSV header, else text."""
    if given != "auto":
        return _FORMATS[given]
    suffix = Path(name).suffix.lower()
    if suffix in {".ndjson", ".jsonl"}:
        return _FORMATS["ndjson"]
    if suffix == ".csv":
        return _FORMATS["csv"]
    if name == STDIN:
        with open(path, "rb") as head:  # noqa: PTH123
            first = head.readline(4096).strip()
        if first.startswith(b"{"):
            return _FORMATS["ndjson"]
        if first.replace(b" ", b"").lower().startswith(b"type,value"):
            return _FORMATS["csv"]
    return _FORMATS["text"]


class _Progress:
    """One self-rewriting line on a terminal's stderr; silent when stderr is not a terminal."""

    def __init__(self) -> None:
        self.live = sys.stderr.isatty()

    def show(self, text: str) -> None:
        if self.live:
            sys.stderr.write(f"\r\033[K{text}")
            sys.stderr.flush()

    def done(self) -> None:
        if self.live:
            sys.stderr.write("\r\033[K")


def cmd_sets_list(args: argparse.Namespace) -> None:
    sets = _client(args).sets()
    lines = [f"{'SLUG':<32} {'OWNER':<20} {'DISTRIBUTION':<12} {'TLP':<13} NAME"]
    lines += [
        f"{s['slug']:<32} {s['owner']:<20} {s['distribution']:<12} {s['tlp']:<13} {s['name']}"
        for s in sets
    ]
    _print(args, sets, "\n".join(lines))


def cmd_sets_create(args: argparse.Namespace) -> None:
    fields: dict[str, Any] = {"distribution": args.distribution, "tlp": args.tlp}
    if args.hops is not None:
        fields["federation_hops"] = args.hops
    if args.types:
        fields["signal_types"] = args.types.split(",")
    created = _client(args).create_set(args.slug, args.name, **fields)
    _print(
        args,
        created,
        f"created set {created['slug']} ({created['distribution']}, {created['tlp']})",
    )


def cmd_sets_update(args: argparse.Namespace) -> None:
    changes: dict[str, Any] = {
        field: getattr(args, field)
        for field in ("name", "description", "distribution", "tlp", "attribution", "pdq_threshold")
        if getattr(args, field) is not None
    }
    if args.hops is not None:
        changes["federation_hops"] = args.hops
    if args.types is not None:
        changes["signal_types"] = [t for t in args.types.split(",") if t]
    if not changes:
        raise UsageError("nothing to change: give at least one of the options (--help lists them)")
    updated = _client(args).update_set(args.slug, **changes)
    _print(args, updated, f"updated set {updated['slug']}\n{_fields(_set_summary(updated))}")


def _set_summary(hash_set: dict[str, Any]) -> dict[str, Any]:
    fields = ("name", "owner", "distribution", "tlp", "federation_hops", "attribution",
              "signal_types", "pdq_threshold", "description", "origin")  # fmt: skip
    return {k: hash_set[k] for k in fields if k in hash_set}


def cmd_sets_grant(args: argparse.Namespace) -> None:
    grant = _client(args).grant(
        args.slug, args.organisation, can_read=True, can_publish=args.publish
    )
    rights = "read and publish" if grant["can_publish"] else "read"
    _print(args, grant, f"{args.organisation} may {rights} {args.slug}")


def cmd_sets_revoke(args: argparse.Namespace) -> None:
    _client(args).revoke_grant(args.slug, args.organisation)
    _print(
        args,
        {"set": args.slug, "organisation": args.organisation, "revoked": True},
        f"{args.organisation} may no longer read or publish {args.slug}",
    )


# How many times ``hashx publish`` sends again a batch that the exchange lost before its merge.
RESENDS = 3


def cmd_publish(args: argparse.Namespace) -> None:
    client = _client(args)
    path = args.inputs.path(args.file)
    progress = _Progress()
    answer, report = _publish_once(client, args, path, progress)
    for _ in range(RESENDS):
        if not (report["state"] == "failed" and report.get("resend")):
            break
        # Staged and lost before its merge (a crash of the exchange's database): the batch gave
        # up its Idempotency-Key, so the same request with the same key is published anew.
        progress.done()
        print(f"hashx: batch {answer['batch']} was lost before it was merged; sending it again",
              file=sys.stderr)  # fmt: skip
        answer, report = _publish_once(client, args, path, progress)
    progress.done()
    if report["state"] == "failed":
        if args.json:  # scripts get the report (its error) as well as exit 1
            _print(args, {"answer": answer, "report": report}, "")
        raise BatchFailed(f"batch {answer['batch']} could not be merged: {report.get('error')}")
    text = [
        f"{shown(args.file)} into {args.set}: batch {answer['batch']}: {answer['accepted']:,}"
        f" accepted, {answer['rejected']:,} rejected of {answer['received']:,}"
    ]
    if "new" in report:
        text.append(
            f"merged: {report['new']:,} new, {report['updated']:,} updated,"
            f" {report['duplicate']:,} duplicate"
        )
        if report.get("near_duplicates") or report.get("near_duplicates_pending"):
            pending = " (still being linked)" if report.get("near_duplicates_pending") else ""
            text.append(f"near-duplicates of older entries: {report['near_duplicates']:,}{pending}")
    text += [f"  {r.get('line', r.get('index'))}: {r['reason']}" for r in answer["rejections"][:20]]
    if answer["rejected"] > 20:
        text.append(f"  … {answer['rejected'] - 20:,} more rejections (--json lists them)")
    _print(args, {"answer": answer, "report": report}, "\n".join(text))


def _publish_once(
    client: Client, args: argparse.Namespace, path: str, progress: "_Progress"
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Upload ``path`` and, unless ``--no-wait``, wait for its merge: (answer, report)."""
    size = max(Path(path).stat().st_size, 1)
    answer = client.publish_file(
        args.set,
        path,
        _format_of(args.file, path, args.format),
        atomic=args.atomic,
        idempotency_key=args.idempotency_key or "",
        progress=lambda sent: progress.show(f"uploading {100 * sent // size}% ({sent >> 20} MiB)"),
    )
    report = answer
    if not args.no_wait and answer["accepted"]:
        later = f"it goes on merging: `hashx batch {answer['batch']}` shows how far"
        try:
            report = client.wait_for_batch(
                answer["batch"],
                progress=lambda r: progress.show(
                    f"merging {int(100 * r['progress'])}% ({r['merged']:,} lines)"
                ),
                timeout=args.wait_timeout,
            )
        except TimeoutError as exc:
            progress.done()
            raise StillMerging(f"{exc}; {later}") from None
        except KeyboardInterrupt:
            progress.done()
            print(f"hashx: stopped waiting for batch {answer['batch']}; {later}", file=sys.stderr)
            raise
    return answer, report


def _type_value_lines(text: str) -> list[tuple[int, dict[str, Any]]]:
    """python-threatexchange's simple format, ``<type> <value>`` per line, as the exchange reads
    it: blank lines and ``#`` comments skipped. Each item with its line number, from 1."""
    items = []
    for number, line in enumerate(text.splitlines(), 1):
        kind, _, value = line.strip().partition(" ")
        if kind and not kind.startswith("#"):
            items.append((number, {"type": kind, "value": value.strip()}))
    return items


def _items_from(args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[str]]:
    """The items to send and, for each, where it came from (``line N`` of --file, from 1 as
    publish counts, or ``--value``)."""
    if args.value:
        return [{"type": args.type, "value": args.value}], ["--value"]
    lines = _type_value_lines(args.inputs.read_text(args.file))
    return [item for _, item in lines], [f"line {number}" for number, _ in lines]


def _rejections(answer: dict[str, Any], origins: list[str]) -> str:
    """The first 20 rejections, each at its line of the file (the answer counts items from 0)."""
    text = []
    for r in answer["rejections"][:20]:
        index = r.get("index")
        where = origins[index] if isinstance(index, int) and 0 <= index < len(origins) else index
        text.append(f"\n  {where}: {r['reason']}")
    if len(answer["rejections"]) > 20:
        text.append(f"\n  … {len(answer['rejections']) - 20:,} more (--json lists them)")
    return "".join(text)


def cmd_retract(args: argparse.Namespace) -> None:
    items, origins = _items_from(args)
    answer = _client(args).retract(args.set, items)
    text = f"retracted {answer['retracted']}, of which {answer['tombstoned']} are now tombstones"
    _print(args, answer, text + _rejections(answer, origins))


def cmd_opinion(args: argparse.Namespace) -> None:
    items, origins = _items_from(args)
    items = [{**item, "category": args.category, "tags": args.tag} for item in items]
    answer = _client(args).opinions(args.set, items)
    text = f"{answer['accepted']} opinions recorded"
    _print(args, answer, text + _rejections(answer, origins))


def cmd_batches(args: argparse.Namespace) -> None:
    page = _client(args).batches(set_slug=args.set or "", state=args.state or "", limit=args.limit)
    lines = [f"{'BATCH':<36} {'SET':<20} {'STATE':<8} {'DONE':>5} {'NEW':>9} {'DUPLICATE':>9}"
             f" {'REJECTED':>8} CREATED"]  # fmt: skip
    lines += [
        f"{b['id']:<36} {b['set']:<20} {b['state']:<8} {int(100 * b['progress']):>4}%"
        f" {b['new']:>9,} {b['duplicate']:>9,} {b['rejected']:>8,} {b['created_at']}"
        for b in page["results"]
    ]
    _print(args, page, "\n".join(lines))


def cmd_batch(args: argparse.Namespace) -> None:
    report = _client(args).batch(args.batch_id)
    _print(args, report, _fields(report))


def cmd_sync(args: argparse.Namespace) -> None:
    """Bring the local copy in --out up to date: run it on a schedule (or in a loop) and it
    never misses a change or a retraction; interrupted, it resumes from its last checkpoint."""
    client = _client(args)
    store = LocalStore(args.out)
    try:
        sets = [s for s in (args.sets or "").split(",") if s] or (
            json.loads(store.get("sets", "[]")) or [s["slug"] for s in client.sets()]
        )
        progress = _Progress()
        try:
            applied, cursor = sync(
                client, store, sets, progress=lambda n: progress.show(f"synced {n:,} changes")
            )
        except OtherSets as exc:
            raise UsageError(f"{exc}: use another --out") from None
        progress.done()
        total = store.count()
    finally:
        store.close()
    _print(
        args,
        {"changes": applied, "entries": total, "cursor": cursor, "sets": sets},
        f"{applied:,} changes applied; {total:,} active entries of {', '.join(sets)} in"
        f" {store.path}",
    )


def cmd_subscriptions_list(args: argparse.Namespace) -> None:
    subscriptions = _client(args).subscriptions()
    lines = [f"{'ID':<36} {'STATE':<8} {'SETS':<24} URL"]
    lines += [
        f"{s['id']:<36} {s['state']:<8} {','.join(s['sets']):<24} {s['url']}"
        + (f"\n    disabled: {s['disabled_reason']}" if s["disabled_reason"] else "")
        + (f"\n    last error: {s['last_error']}" if s["last_error"] else "")
        for s in subscriptions
    ]
    _print(args, subscriptions, "\n".join(lines))


def cmd_subscriptions_add(args: argparse.Namespace) -> None:
    fields: dict[str, Any] = {"signal_types": args.type, "labels": args.label}
    if args.cursor:
        fields["cursor"] = args.cursor
    if args.description:
        fields["description"] = args.description
    created = _client(args).subscribe(args.endpoint, args.sets.split(","), **fields)
    _print(args, created, f"subscription {created['id']} delivers to {created['url']}")


def cmd_subscriptions_state(args: argparse.Namespace) -> None:
    client = _client(args)
    if args.subscriptions_command == "delete":
        client.delete_subscription(args.id)
        _print(args, {"deleted": args.id}, f"subscription {args.id} deleted")
        return
    if args.subscriptions_command == "redeliver":
        answer = client.redeliver(args.id, cursor=args.cursor or "", delivery=args.delivery or "")
    else:
        answer = client.update_subscription(args.id, active=args.subscriptions_command == "resume")
    _print(args, answer, f"subscription {answer['id']}: {answer['state']}")


def cmd_subscriptions_deliveries(args: argparse.Namespace) -> None:
    page = _client(args).deliveries(args.id, limit=args.limit)
    lines = [f"{'WEBHOOK-ID':<36} {'STATE':<10} {'COUNT':>5} {'TRIES':>5} LAST"]
    lines += [
        f"{d['id']:<36} {d['state']:<10} {d['count']:>5} {d['attempts']:>5}"
        f" {d['last_status'] or ''} {d['last_error']}"
        for d in page["results"]
    ]
    _print(args, page, "\n".join(lines))


def cmd_token_create(args: argparse.Namespace) -> None:
    made = _client(args).create_feed_token(
        args.name, args.sets.split(","), expires_at=args.expires_at
    )
    _print(
        args,
        made,
        f"feed token {made['id']} for {','.join(made['sets'])}, until {made['expires_at']}\n"
        f"{made['token']}\n(shown once: keep it now; send it as 'Authorization: Bearer <token>')",
    )


def cmd_token_list(args: argparse.Namespace) -> None:
    tokens = _client(args).feed_tokens()
    rows = [
        [t["id"], t["hint"], "revoked" if t["revoked_at"] else "active", t["expires_at"],
         t["sets"], t["name"]]
        for t in tokens
    ]  # fmt: skip
    _print(args, tokens, _table(["ID", "HINT", "STATE", "EXPIRES", "SETS", "NAME"], rows))


def cmd_token_revoke(args: argparse.Namespace) -> None:
    revoked = _client(args).revoke_feed_token(args.id)
    _print(args, revoked, f"feed token {revoked['id']} revoked")


def cmd_webhook_verify(args: argparse.Namespace) -> None:
    """Check a saved delivery: the body file and its headers (JSON object or "name: value"
    lines), against the exchange's published keys (--keys file, or fetched from --url)."""
    body = args.inputs.read_bytes(args.body)
    raw_headers = args.inputs.read_bytes(args.headers).decode("utf-8", "replace")
    try:
        headers = json.loads(raw_headers)
    except ValueError:
        headers = dict(
            (name.strip(), value.strip())
            for name, _, value in (line.partition(":") for line in raw_headers.splitlines())
            if value
        )
    if not isinstance(headers, dict):
        raise UsageError(f"{args.headers}: expected a JSON object or 'name: value' lines")
    if args.keys:
        try:
            keys = json.loads(args.inputs.read_bytes(args.keys))
        except ValueError:
            raise UsageError(f"{args.keys} is not JSON: expected a JWKS") from None
        if isinstance(keys, dict):  # /.well-known/hashx as saved, or a JWKS
            keys = keys.get("jwks", keys)
            keys = keys.get("keys") if isinstance(keys, dict) else keys
        if not isinstance(keys, list):
            raise UsageError(f"{args.keys}: expected a JWKS (an object with a list of keys)")
    else:
        try:
            url = resolve(args.url, None).url
        except ConfigError as exc:
            raise UsageError(str(exc)) from None
        if not url:
            raise UsageError("pass --keys FILE or --url (HASHX_URL) to fetch the exchange's keys")
        keys = exchange_keys(url)
    try:
        webhook_id = verify(body, headers, keys, tolerance=args.tolerance)
    except WebhookVerificationError as exc:
        raise UsageError(f"the delivery does not verify: {exc}") from None
    except (ValueError, TypeError) as exc:  # a key that is not an Ed25519 JWK
        raise UsageError(f"the exchange keys are unusable: {exc}") from None
    _print(args, {"verified": True, "webhook_id": webhook_id}, f"verified {webhook_id}")


def _hash_files(args: argparse.Namespace) -> list[FileHash]:
    paths: list[str] = args.files
    found: list[FileHash] = []
    progress = _Progress()
    for done, name in enumerate(paths, 1):
        if len(paths) > 1:
            progress.show(f"hashing {done:,} of {len(paths):,} files: {shown(name)}")
        try:
            hashes = file_hashes(args.inputs.path(name))
        except MediaExtraMissing as exc:
            raise UsageError(str(exc).replace(args.inputs.spooled or "\0", shown(name))) from None
        except OSError as exc:
            raise UsageError(f"cannot use {shown(name)}: {exc.strerror}") from None
        found.extend(FileHash(shown(name), h.type, h.value, h.quality) for h in hashes)
    progress.done()
    return found


def cmd_hash(args: argparse.Namespace) -> None:
    """Hash files locally. Prints, for each file, a ``# FILE`` comment line and then
    python-threatexchange's ``<type> <value>`` lines, so the output is itself a file that
    ``hashx match --hashes`` and ``hashx publish`` read."""
    found = _hash_files(args)
    lines: list[str] = []
    for item in found:
        if item.type == "pdq" and item.quality is not None and item.quality < 50:
            print(f"hashx: {item.path}: PDQ quality {item.quality} is too low to match on",
                  file=sys.stderr)  # fmt: skip
        if item.type == "vpdq" and len(json.loads(item.value)) > MAX_VPDQ_FRAMES:
            print(f"hashx: {item.path}: {len(json.loads(item.value))} frames: an exchange takes"
                  f" at most {MAX_VPDQ_FRAMES} (an hour at one frame a second)",
                  file=sys.stderr)  # fmt: skip
    current = None
    for item in found:
        if item.path != current:
            current = item.path
            lines.append(f"# {item.path}")
        lines.append(f"{item.type} {item.value}")
    _print(args, [vars(item) for item in found], "\n".join(lines))


def _queries_from(args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[str]]:
    """The signals to match and, for each, what it came from (a file name, a line of --hashes,
    or --value)."""
    queries, origins = [], []
    for h in _hash_files(args):
        queries.append({"type": h.type, "value": h.value})
        origins.append(h.path)
    if args.hashes:
        for number, item in _type_value_lines(args.inputs.read_text(args.hashes)):
            queries.append(item)
            origins.append(f"{shown(args.hashes)} line {number}")
    if args.value:
        queries.append({"type": args.type, "value": args.value})
        origins.append("--value")
    if not queries:
        raise UsageError("nothing to match: give files, --hashes or --value")
    return queries, origins


def cmd_match(args: argparse.Namespace) -> None:
    queries, origins = _queries_from(args)
    answer = _client(args).match(
        queries, sets=args.sets.split(",") if args.sets else None, max_distance=args.max_distance
    )
    rows = []
    for origin, result in zip(origins, answer["results"], strict=True):
        for m in result["matches"]:
            distance = m["distance"]
            if "query_match_percent" in m:  # vpdq: and the shares of frames matched
                distance = f"{distance} ({m['query_match_percent']:g}%/"
                distance += f"{m['compared_match_percent']:g}%)"
            rows.append([origin, result["type"], m["set"], str(m["entry"]), distance, m["labels"]])
    matched = {origin for origin, r in zip(origins, answer["results"], strict=True) if r["matches"]}
    lines = [_table(["SOURCE", "TYPE", "SET", "ENTRY", "DISTANCE", "LABELS"], rows,
                    right=("ENTRY", "DISTANCE"))] if rows else []  # fmt: skip
    sources = len(set(origins))
    lines.append(f"{len(matched)} of {sources} {'source' if sources == 1 else 'sources'} matched"
                 f" ({len(queries)} signals; index at {answer['position']})")  # fmt: skip
    _print(args, answer, "\n".join(lines))


def cmd_audit(args: argparse.Namespace) -> None:
    """Audit events about your organisation (it acted, or owns what was acted on), newest first,
    following pages up to --limit."""
    client = _client(args)
    filters = {k: v for k, v in {"action": args.action, "since": args.since,
                                 "until": args.until}.items() if v}  # fmt: skip
    events: list[dict[str, Any]] = []
    page = client.audit_events(**filters, limit=str(min(args.limit, 500)))
    while True:
        events.extend(page["results"][: args.limit - len(events)])
        if len(events) >= args.limit or not page.get("next"):
            break
        page = client.request("GET", page["next"])
    rows = [
        [e["occurred_at"], e["action"], "staff" if e["actor_staff"] else e["actor_org"],
         e["actor_key_id"][:12], f"{e['object_type']} {e['object_id']}".strip(), e["details"]]
        for e in events
    ]  # fmt: skip
    text = _table(["TIME", "ACTION", "ACTOR", "KEY", "OBJECT", "DETAILS"], rows)
    more = " (more with --limit)" if page.get("next") and len(events) >= args.limit else ""
    _print(args, events, f"{text}\n{len(events):,} events{more}")


def cmd_stats(args: argparse.Namespace) -> None:
    """Your organisation's figures (GET /api/v1/stats), self-contained: its own text layout."""
    stats = _client(args).request("GET", "/api/v1/stats")
    lines = [f"organisation:  {stats['organisation']}"]
    lines.append(f"last publish:  {stats['last_publish_at'] or 'never'}")
    lines.append(f"last pull:     {stats['last_pull_at'] or 'never'}")
    lines.append(f"active keys:   {stats['active_keys']}")
    for key in stats["keys_expiring"]:
        lines.append(f"key expiring:  {key['key_id']} at {key['not_after']}")
    for token in stats.get("feed_tokens", []):
        used = token["last_used_at"] or "never"
        lines.append(
            f"feed token:    {token['name']} ({token['hint']}…) until {token['expires_at']},"
            f" last used {used}"
        )
    for quota in stats["quotas"]:
        lines.append(
            f"quota:         {quota['name']}: {quota['remaining']:,} of {quota['limit']:,} left "
            f"(per {quota['window']} s)"
        )
    days = stats["published_per_day"]
    lines.append(f"published:     {sum(d['signals'] for d in days):,} signals in {len(days)} days")
    for day in days:
        if day["signals"]:
            lines.append(f"  {day['day']}  {day['signals']:>10,}")
    for each in stats["sets"]:
        lines.append(
            f"set {each['slug']}: {each['active']:,} active, {each['tombstones']:,} tombstones, "
            f"{each['positive']:,} positive, {each['negative']:,} negative, "
            f"{each['disputed']:,} disputed"
        )
    for hook in stats["webhooks"]:
        failing = f", failing since {hook['failing_since']}" if hook["failing_since"] else ""
        lines.append(
            f"webhook {hook['url']}: {hook['state']}, {hook['delivered_24h']} delivered in 24 h, "
            f"{hook['pending']} pending{failing}"
        )
    for batch in stats["failed_batches"]:
        lines.append(f"failed batch {batch['id']} ({batch['set']}): {batch['error']}")
    _print(args, stats, "\n".join(lines))


class _Parser(argparse.ArgumentParser):
    """Usage errors are one line too, naming where the help is (every subcommand's parser is
    one of these: argparse makes them of the top parser's class)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="hashx",
        description="Talk to a Hash Exchange as a member: identity, keys, sets, publishing.",
        epilog="Start with `hashx keygen --out key.pem`, have the exchange register the public "
        "key, then `HASHX_URL=… HASHX_KEY=key.pem hashx whoami`. URL and key can also live in "
        '~/.config/hashx/config.toml (url = "…", key = "…"; or $HASHX_CONFIG). A file name '
        "of - reads standard input. Exit codes: 1 the exchange refused (or could not merge a "
        "batch), 2 usage, key, config or file problem, 3 exchange unreachable, 4 still merging "
        "after --wait-timeout, 70 unexpected answer or bug, 130 interrupted. Shell completion: "
        "`hashx completion bash` (or zsh).",
    )
    p.add_argument("--version", action="version", version=f"hashx {client_version()}")
    p.add_argument("--url", help="exchange base URL (default: $HASHX_URL, then the config file)")
    p.add_argument(
        "--key", help="path of your PEM private key (default: $HASHX_KEY, then the config file)"
    )
    p.add_argument(
        "--json", action="store_true", help="print JSON for scripts (also after a command)"
    )
    p.add_argument(
        "--retries",
        type=int,
        default=3,
        metavar="N",
        help="retry rate-limited, unavailable or unreachable calls N times (default 3)",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    keygen = sub.add_parser("keygen", help="create an Ed25519 key pair")
    keygen.add_argument(
        "--out", required=True, help="file for the private key (created with mode 0600)"
    )
    keygen.add_argument("--public-out", help="also write the public key (PEM) to this file")
    keygen.set_defaults(func=cmd_keygen)

    sub.add_parser("whoami", help="show your organisation and key").set_defaults(func=cmd_whoami)

    keys = sub.add_parser("keys", help="list, add, retire or revoke your organisation's keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    keys_sub.add_parser("list", help="list the keys").set_defaults(func=cmd_keys_list)
    add = keys_sub.add_parser("add", help="register another key (proves you hold it)")
    add.add_argument("new_key", help="PEM private key file of the new key (- for stdin)")
    add.add_argument("--label", default="", help="a name for the key")
    add.add_argument("--read-only", action="store_true", help="the key may only read")
    add.set_defaults(func=cmd_keys_add)
    revoke = keys_sub.add_parser("revoke", help="revoke a key now (refused from the next request)")
    revoke.add_argument("key_id")
    revoke.add_argument("--reason", required=True)
    revoke.set_defaults(func=cmd_keys_revoke)
    retire = keys_sub.add_parser("retire", help="let a key keep working until a time, for rotation")
    retire.add_argument("key_id")
    retire.add_argument(
        "--not-after", required=True, help="ISO 8601 time, e.g. 2026-12-31T00:00:00Z"
    )
    retire.set_defaults(func=cmd_keys_retire)
    sets = sub.add_parser("sets", help="list, create and share hash sets")
    sets_sub = sets.add_subparsers(dest="sets_command", required=True, metavar="ACTION")
    sets_sub.add_parser("list", help="the sets you may read").set_defaults(func=cmd_sets_list)
    create = sets_sub.add_parser("create", help="create a set your organisation owns")
    create.add_argument("slug")
    create.add_argument("--name", required=True)
    create.add_argument(
        "--distribution", default="granted", choices=["owner", "granted", "coalition", "federated"]
    )
    create.add_argument(
        "--tlp", default="amber", choices=["clear", "green", "amber", "amber+strict", "red"]
    )
    create.add_argument("--types", help="comma-separated signal types the set takes (default: all)")
    create.add_argument(
        "--hops",
        type=int,
        choices=[1, 2, 3],
        help="federated: how many exchanges an entry may pass",
    )
    create.set_defaults(func=cmd_sets_create)
    grant = sets_sub.add_parser(
        "grant", help="let another organisation read (or publish to) your set"
    )
    grant.add_argument("slug")
    grant.add_argument("organisation")
    grant.add_argument("--publish", action="store_true", help="also allow publishing")
    grant.set_defaults(func=cmd_sets_grant)
    revoke_grant = sets_sub.add_parser(
        "revoke", help="take back what `sets grant` gave an organisation (read and publish)"
    )
    revoke_grant.add_argument("slug")
    revoke_grant.add_argument("organisation")
    revoke_grant.set_defaults(func=cmd_sets_revoke)
    update = sets_sub.add_parser("update", help="change a set you own (only the options given)")
    update.add_argument("slug")
    update.add_argument("--name")
    update.add_argument("--description")
    update.add_argument("--distribution", choices=["owner", "granted", "coalition", "federated"])
    update.add_argument("--tlp", choices=["clear", "green", "amber", "amber+strict", "red"])
    update.add_argument("--attribution", choices=["named", "anonymous"])
    update.add_argument(
        "--hops",
        type=int,
        choices=[1, 2, 3],
        help="federated: how many exchanges an entry may pass",
    )
    update.add_argument("--pdq-threshold", type=int, metavar="0-31")
    update.add_argument("--types", help='comma-separated signal types the set takes ("" for all)')
    update.set_defaults(func=cmd_sets_update)

    publish = sub.add_parser("publish", help="upload a file of signals into a set (any size)")
    publish.add_argument("--set", required=True, help="slug of the set")
    publish.add_argument(
        "file",
        help='NDJSON (.ndjson), CSV (.csv) or "<type> <value>" lines (other); - reads stdin',
    )
    publish.add_argument("--format", default="auto", choices=["auto", *_FORMATS])
    publish.add_argument(
        "--atomic", action="store_true", help="publish nothing if one line is rejected"
    )
    publish.add_argument("--idempotency-key", help="retrying with the same key changes nothing")
    publish.add_argument("--no-wait", action="store_true", help="do not wait for the merge")
    publish.add_argument(
        "--wait-timeout",
        type=float,
        metavar="SECONDS",
        help="stop waiting for the merge after this long (exit 4; the merge goes on)",
    )
    publish.set_defaults(func=cmd_publish)

    for name, func, helptext in [
        ("retract", cmd_retract, "retract your contributions (owners: remove entries)"),
        ("opinion", cmd_opinion, "give an opinion on entries of a set"),
    ]:
        command = sub.add_parser(name, help=helptext)
        command.add_argument("--set", required=True, help="slug of the set")
        source = command.add_mutually_exclusive_group(required=True)
        source.add_argument("--file", help='"<type> <value>" lines (- for stdin)')
        source.add_argument("--value", help="one value (with --type)")
        command.add_argument("--type", default="pdq", help="signal type of --value (default: pdq)")
        if name == "opinion":
            command.add_argument(
                "--category", required=True, choices=["positive", "negative", "investigation_seed"]
            )
            command.add_argument("--tag", action="append", default=[], help="a tag (repeatable)")
        command.set_defaults(func=func)

    sync = sub.add_parser(
        "sync", help="keep a local copy (SQLite) of sets in sync with the change feed"
    )
    sync.add_argument(
        "--sets", help="comma-separated set slugs (default: as before, else every set you read)"
    )
    sync.add_argument(
        "--out", default="hashx-data", help="directory of the local copy (hashx.sqlite3)"
    )
    sync.set_defaults(func=cmd_sync)

    subs = sub.add_parser("subscriptions", help="webhook subscriptions: the exchange pushes to you")
    subs_sub = subs.add_subparsers(dest="subscriptions_command", required=True, metavar="ACTION")
    subs_sub.add_parser("list", help="your subscriptions").set_defaults(func=cmd_subscriptions_list)
    add_sub = subs_sub.add_parser("add", help="subscribe an https endpoint to sets")
    # Not "url": that is the exchange's URL (--url).
    add_sub.add_argument("endpoint", metavar="URL", help="your https endpoint")
    add_sub.add_argument("--sets", required=True, help="comma-separated set slugs")
    add_sub.add_argument("--type", action="append", default=[], help="only this signal type")
    add_sub.add_argument("--label", action="append", default=[], help="only this label")
    add_sub.add_argument("--cursor", help="start after this feed cursor (default: now)")
    add_sub.add_argument("--description", default="")
    add_sub.set_defaults(func=cmd_subscriptions_add)
    for name, help_text in (
        ("pause", "stop deliveries for now"),
        ("resume", "deliver again (also after the exchange disabled it)"),
        ("delete", "delete the subscription"),
        ("redeliver", "send the pending page now, or rewind with --cursor / --delivery"),
    ):
        command = subs_sub.add_parser(name, help=help_text)
        command.add_argument("id")
        if name == "redeliver":
            command.add_argument("--cursor", help="rewind to this feed cursor")
            command.add_argument("--delivery", help="rewind to where this delivery started")
        command.set_defaults(func=cmd_subscriptions_state)
    deliveries = subs_sub.add_parser("deliveries", help="recent deliveries and their attempts")
    deliveries.add_argument("id")
    deliveries.add_argument("--limit", type=int, default=20)
    deliveries.set_defaults(func=cmd_subscriptions_deliveries)

    token = sub.add_parser("token", help="read-only feed tokens for TAXII, MISP and other pulls")
    token_sub = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    token_create = token_sub.add_parser("create", help="make a token (its secret is shown once)")
    token_create.add_argument("name", help="what it is for, e.g. opencti")
    token_create.add_argument("--sets", required=True, help="comma-separated set slugs")
    token_create.add_argument("--expires-at", help="ISO 8601 time (default: in 90 days)")
    token_create.set_defaults(func=cmd_token_create)
    token_sub.add_parser("list", help="your tokens (never secrets)").set_defaults(
        func=cmd_token_list
    )
    token_revoke = token_sub.add_parser("revoke", help="revoke a token now")
    token_revoke.add_argument("id")
    token_revoke.set_defaults(func=cmd_token_revoke)

    webhook = sub.add_parser(
        "webhook-verify", help="check a webhook delivery's signature (body and headers files)"
    )
    webhook.add_argument("body", help="file holding the raw request body (- for stdin)")
    webhook.add_argument(
        "headers", help='file holding the headers (JSON or "name: value" lines; - for stdin)'
    )
    webhook.add_argument("--keys", help="the exchange's JWKS (default: fetched from --url)")
    webhook.add_argument("--tolerance", type=int, default=300, help="seconds of clock skew")
    webhook.set_defaults(func=cmd_webhook_verify)

    batch = sub.add_parser("batch", help="the state and counts of a publish batch")
    batch.add_argument("batch_id")
    batch.set_defaults(func=cmd_batch)
    batches = sub.add_parser("batches", help="your organisation's recent batches, newest first")
    batches.add_argument("--set", help="only batches into this set")
    batches.add_argument("--state", choices=["queued", "merging", "done", "failed"])
    batches.add_argument("--limit", type=int, default=20)
    batches.set_defaults(func=cmd_batches)

    hash_ = sub.add_parser("hash", help="hash files locally: MD5, SHA-256, PDQ for images")
    hash_.add_argument("files", nargs="+", metavar="FILE", help="files to hash (- for stdin)")
    hash_.set_defaults(func=cmd_hash)

    match = sub.add_parser("match", help="match files (hashed here) or hashes against the exchange")
    match.add_argument("files", nargs="*", metavar="FILE", help="hashed locally, never sent")
    match.add_argument("--hashes", help='file of "<type> <value>" lines (- for stdin)')
    match.add_argument("--value", help="one value (with --type)")
    match.add_argument("--type", default="pdq", help="signal type of --value (default: pdq)")
    match.add_argument("--sets", help="comma-separated set slugs (default: every set you read)")
    match.add_argument("--max-distance", type=int, help="pdq: at most this far (default 31)")
    match.set_defaults(func=cmd_match)

    audit = sub.add_parser(
        "audit",
        help="audit events about your organisation (who read or changed what), newest first",
    )
    audit.add_argument("--action", help="only this action, e.g. feed.pulled")
    audit.add_argument("--since", help="ISO 8601 time, e.g. 2026-12-01T00:00:00Z")
    audit.add_argument("--until", help="ISO 8601 time")
    audit.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    audit.set_defaults(func=cmd_audit)

    completion = sub.add_parser("completion", help="print a shell completion script")
    completion.add_argument("shell", choices=["bash", "zsh"])
    completion.set_defaults(func=cmd_completion)

    stats = sub.add_parser("stats", help="your organisation's figures: publishing, sets, quotas")
    stats.set_defaults(func=cmd_stats)

    _json_after_every_command(p)
    return p


def _commands(p: argparse.ArgumentParser) -> Iterator[tuple[list[str], argparse.ArgumentParser]]:
    """Every (sub)command's name path and parser, the top level first."""
    yield [], p
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                for path, parser_ in _commands(child):
                    yield [name, *path], parser_


def _json_after_every_command(p: argparse.ArgumentParser) -> None:
    """``hashx sets list --json`` as well as ``hashx --json sets list``."""
    for path, command in _commands(p):
        if path:
            command.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                                 help="print JSON for scripts")  # fmt: skip


def completion_script(shell: str) -> str:
    """A bash completion for every command, action and option of ``parser()``, generated from it
    (so it never falls behind); zsh loads it through bashcompinit. Files complete where nothing
    else does."""
    words = []
    for path, command in _commands(parser()):
        choices = [
            name
            for action in command._actions
            if isinstance(action, argparse._SubParsersAction)
            for name in action.choices
        ]
        options = [o for a in command._actions for o in a.option_strings if o.startswith("--")]
        key = " ".join(["hashx", *path])
        words.append(f'  ["{key}"]="{" ".join([*choices, *options])}"')
    script = "\n".join([
        "# hashx completion: eval \"$(hashx completion bash)\" in ~/.bashrc",
        "declare -A _hashx_words=(", *words, ")",
        "_hashx() {",
        '  local cur="${COMP_WORDS[COMP_CWORD]}" path=hashx w',
        '  for w in "${COMP_WORDS[@]:1:COMP_CWORD-1}"; do',
        '    [[ -n "${_hashx_words["$path $w"]+set}" ]] && path="$path $w"',
        "  done",
        '  COMPREPLY=($(compgen -W "${_hashx_words[$path]}" -- "$cur"))',
        "}",
        "complete -o default -F _hashx hashx",
    ])  # fmt: skip
    if shell == "zsh":
        script = "autoload -U +X bashcompinit && bashcompinit\n" + script
    return script + "\n"


def cmd_completion(args: argparse.Namespace) -> None:
    sys.stdout.write(completion_script(args.shell))


def client_version() -> str:
    try:
        return version("hash-exchange-client")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


KEY_ID = re.compile(r"[A-Za-z0-9_-]{43}")


def _key_ids_as_operands(argv: list[str]) -> list[str]:
    """A key id is 43 base64url characters, so one in 64 begins with ``-`` and argparse would
    take it for an option. For ``keys revoke`` and ``keys retire``, such a token is moved after
    ``--``; no option of hashx is 43 characters long."""
    end = argv.index("--") if "--" in argv else len(argv)
    head, tail = argv[:end], argv[end + 1 :]
    if "keys" not in head or not {"revoke", "retire"} & set(head):
        return argv
    ids = [a for a in head if a.startswith("-") and KEY_ID.fullmatch(a)]
    if not ids:
        return argv
    return [a for a in head if a not in ids] + ["--", *ids, *tail]


# What each exit status means (the module docstring and `hashx --help` say the same).
EXIT_CODES = {
    0: "done",
    1: "the exchange refused (its problem's title and detail are printed) or a batch failed",
    2: "bad usage, or a missing or unreadable key, config or input file",
    3: "the exchange cannot be reached",
    4: "a batch was still merging when --wait-timeout ran out",
    70: "an unexpected answer or a bug (HASHX_DEBUG=1 shows the traceback)",
    130: "interrupted",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(_key_ids_as_operands(argv))
    with ExitStack() as stack:
        args.inputs = Inputs(stack)
        code, message = _run(args.func, args)
        if message:
            print(f"hashx: {message}".replace(args.inputs.spooled or "\0", "standard input"),
                  file=sys.stderr)  # fmt: skip
    return code


def _run(func: Callable[[argparse.Namespace], None], args: argparse.Namespace) -> tuple[int, str]:
    """Run a command; every failure becomes an exit code and one line to print."""
    try:
        func(args)
    except UsageError as exc:
        return 2, str(exc)
    except BatchFailed as exc:
        return 1, str(exc)
    except StillMerging as exc:
        return 4, str(exc)
    except KeyboardInterrupt:
        return 130, "interrupted"
    except BrokenPipeError:
        # The reader went away (`hashx hash * | head`): stop quietly, as other tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141, ""
    except HashxError as exc:
        if args.json:  # scripts get the whole problem document (its errors list too)
            print(json.dumps({"status": exc.status, **exc.problem}, indent=2))
        return 1, f"the exchange refused: {' '.join(str(exc).split())}"
    except requests.JSONDecodeError:
        return 70, "the answer is not JSON: is the URL (--url, HASHX_URL) an exchange's?"
    except requests.RequestException as exc:
        return 3, f"cannot reach the exchange: {_reason(exc)}"
    except OSError as exc:
        # A file named on the command line (upload, list of values, state) is missing or unreadable.
        return 2, f"cannot use {exc.filename or 'a file'}: {exc.strerror}"
    except UnicodeDecodeError as exc:
        return 2, f"a file given is not UTF-8 text: {exc.reason} at byte {exc.start}"
    except sqlite3.Error as exc:
        return 2, f"cannot use the local copy: {exc}"
    except Exception as exc:  # an answer not shaped as expected, or a bug: still one line
        if os.environ.get("HASHX_DEBUG"):
            traceback.print_exc()
        return 70, (
            f"unexpected error ({type(exc).__name__}: {exc}); HASHX_DEBUG=1 shows the traceback"
        )
    return 0, ""


def _reason(exc: requests.RequestException) -> str:
    """The innermost cause of a failed request, not urllib3's retry wrapper around it."""
    url = exc.request.url if exc.request is not None else ""
    cause: BaseException = exc
    while cause.__cause__ is not None or (cause.args and isinstance(cause.args[0], Exception)):
        cause = cause.__cause__ or cause.args[0]
    text = str(getattr(cause, "reason", None) or cause)
    return f"{url}: {text}" if url else text


if __name__ == "__main__":
    sys.exit(main())
