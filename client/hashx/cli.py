"""``hashx``: the command line for Hash Exchange members.

Configuration, first match wins: flags (--url, --key), then the environment (HASHX_URL,
HASHX_KEY: path of your PEM private key), then a config file (see ``hashx.config``).

Exit codes: 0 done; 1 the exchange refused (its problem document is printed) or could not merge
a batch; 2 bad usage, a missing or unreadable key, config or input file; 3 the exchange cannot be
reached; 4 a batch was still merging when ``--wait-timeout`` ran out; 130 interrupted.
"""

import argparse
import json
import re
import sqlite3
import sys
from pathlib import Path
from typing import Any

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
from hashx.store import LocalStore, OtherSets, sync
from hashx.webhooks import WebhookVerificationError, verify


class UsageError(Exception):
    pass


class BatchFailed(Exception):
    """The exchange accepted a batch but could not merge it."""


class StillMerging(Exception):
    """``--wait-timeout`` ran out before the merge finished."""


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
        new_key = load_private_key(args.new_key)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot load the new key {args.new_key}: {exc}") from None
    added = _client(args).add_key(new_key, label=args.label, read_only=args.read_only)
    _print(args, added, f"added key {added['key_id']} ({added['state']})")


def cmd_keys_revoke(args: argparse.Namespace) -> None:
    key = _client(args).revoke_key(args.key_id, args.reason)
    _print(args, key, f"revoked key {key['key_id']}")


def cmd_keys_retire(args: argparse.Namespace) -> None:
    key = _client(args).retire_key(args.key_id, args.not_after)
    _print(args, key, f"key {key['key_id']} retires at {key['not_after']}")


_FORMATS = {"ndjson": "application/x-ndjson", "csv": "text/csv", "text": "text/plain"}


def _format_of(path: str, given: str) -> str:
    if given != "auto":
        return _FORMATS[given]
    suffix = Path(path).suffix.lower()
    if suffix in {".ndjson", ".jsonl"}:
        return _FORMATS["ndjson"]
    if suffix == ".csv":
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
    fields = {"distribution": args.distribution, "tlp": args.tlp}
    if args.types:
        fields["signal_types"] = args.types.split(",")
    created = _client(args).create_set(args.slug, args.name, **fields)
    _print(
        args,
        created,
        f"created set {created['slug']} ({created['distribution']}, {created['tlp']})",
    )


def cmd_sets_grant(args: argparse.Namespace) -> None:
    grant = _client(args).grant(
        args.slug, args.organisation, can_read=True, can_publish=args.publish
    )
    rights = "read and publish" if grant["can_publish"] else "read"
    _print(args, grant, f"{args.organisation} may {rights} {args.slug}")


def cmd_publish(args: argparse.Namespace) -> None:
    client = _client(args)
    progress = _Progress()
    size = max(Path(args.file).stat().st_size, 1)
    answer = client.publish_file(
        args.set,
        args.file,
        _format_of(args.file, args.format),
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
    progress.done()
    if report["state"] == "failed":
        if args.json:  # scripts get the report (its error) as well as exit 1
            _print(args, {"answer": answer, "report": report}, "")
        raise BatchFailed(f"batch {answer['batch']} could not be merged: {report.get('error')}")
    text = [
        f"batch {answer['batch']}: {answer['accepted']:,} accepted, {answer['rejected']:,} rejected"
        f" of {answer['received']:,}"
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


def _type_value_lines(text: str) -> list[dict[str, Any]]:
    """python-threatexchange's simple format, ``<type> <value>`` per line, as the exchange reads
    it: blank lines and ``#`` comments skipped."""
    items = []
    for line in text.splitlines():
        kind, _, value = line.strip().partition(" ")
        if kind and not kind.startswith("#"):
            items.append({"type": kind, "value": value.strip()})
    return items


def _items_from(args: argparse.Namespace) -> list[dict[str, Any]]:
    if args.value:
        return [{"type": args.type, "value": args.value}]
    return _type_value_lines(Path(args.file).read_text())


def cmd_retract(args: argparse.Namespace) -> None:
    answer = _client(args).retract(args.set, _items_from(args))
    text = f"retracted {answer['retracted']}, of which {answer['tombstoned']} are now tombstones"
    text += "".join(f"\n  {r['index']}: {r['reason']}" for r in answer["rejections"][:20])
    _print(args, answer, text)


def cmd_opinion(args: argparse.Namespace) -> None:
    items = [{**item, "category": args.category, "tags": args.tag} for item in _items_from(args)]
    answer = _client(args).opinions(args.set, items)
    text = f"{answer['accepted']} opinions recorded"
    text += "".join(f"\n  {r['index']}: {r['reason']}" for r in answer["rejections"][:20])
    _print(args, answer, text)


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
    _print(args, report, "\n".join(f"{k}: {v}" for k, v in report.items()))


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


def cmd_webhook_verify(args: argparse.Namespace) -> None:
    """Check a saved delivery: the body file and its headers (JSON object or "name: value"
    lines), against the exchange's published keys (--keys file, or fetched from --url)."""
    body = _read(args.body)
    raw_headers = _read(args.headers).decode("utf-8", "replace")
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
            keys = json.loads(_read(args.keys))
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


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None


def _hash_files(paths: list[str]) -> list[Any]:
    from hashx.media import MediaExtraMissing, file_hashes

    found, progress = [], _Progress()
    for done, path in enumerate(paths, 1):
        if len(paths) > 1:
            progress.show(f"hashing {done:,} of {len(paths):,} files: {path}")
        try:
            found.extend(file_hashes(path))
        except MediaExtraMissing as exc:
            raise UsageError(str(exc)) from None
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    progress.done()
    return found


def cmd_hash(args: argparse.Namespace) -> None:
    """Hash files locally; prints python-threatexchange's ``<type> <value>`` lines."""
    found = _hash_files(args.files)
    for item in found:
        if item.type == "pdq" and item.quality is not None and item.quality < 50:
            print(f"hashx: {item.path}: PDQ quality {item.quality} is too low to match on",
                  file=sys.stderr)  # fmt: skip
    data = [vars(item) for item in found]
    _print(args, data, "\n".join(f"{item.type} {item.value}" for item in found))


def _queries_from(args: argparse.Namespace) -> list[dict[str, Any]]:
    queries = [{"type": h.type, "value": h.value} for h in _hash_files(args.files)]
    if args.hashes:
        text = sys.stdin.read() if args.hashes == "-" else Path(args.hashes).read_text()
        queries += _type_value_lines(text)
    if args.value:
        queries.append({"type": args.type, "value": args.value})
    if not queries:
        raise UsageError("nothing to match: give files, --hashes or --value")
    return queries


def cmd_match(args: argparse.Namespace) -> None:
    queries = _queries_from(args)
    answer = _client(args).match(
        queries, sets=args.sets.split(",") if args.sets else None, max_distance=args.max_distance
    )
    lines = []
    for result in answer["results"]:
        for m in result["matches"]:
            lines.append(f"{result['type']} {result['value']}  {m['set']} entry {m['entry']}"
                         f" distance {m['distance']} {','.join(m['labels'])}".rstrip())  # fmt: skip
    matched = sum(1 for r in answer["results"] if r["matches"])
    lines.append(f"{matched} of {len(queries)} signals matched (index at {answer['position']})")
    _print(args, answer, "\n".join(lines))


def cmd_stats(args: argparse.Namespace) -> None:
    """Your organisation's figures (GET /api/v1/stats), self-contained: its own text layout."""
    stats = _client(args).request("GET", "/api/v1/stats")
    lines = [f"organisation:  {stats['organisation']}"]
    lines.append(f"last publish:  {stats['last_publish_at'] or 'never'}")
    lines.append(f"last pull:     {stats['last_pull_at'] or 'never'}")
    lines.append(f"active keys:   {stats['active_keys']}")
    for key in stats["keys_expiring"]:
        lines.append(f"key expiring:  {key['key_id']} at {key['not_after']}")
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


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hashx",
        description="Talk to a Hash Exchange as a member: identity, keys, sets, publishing.",
        epilog="Start with `hashx keygen --out key.pem`, have the exchange register the public "
        "key, then `HASHX_URL=… HASHX_KEY=key.pem hashx whoami`. URL and key can also live in "
        '~/.config/hashx/config.toml (url = "…", key = "…"; or $HASHX_CONFIG). Exit codes: '
        "1 the exchange refused (or could not merge a batch), 2 usage, key, config or file "
        "problem, 3 exchange unreachable, 4 still merging after --wait-timeout, 130 interrupted.",
    )
    p.add_argument("--url", help="exchange base URL (default: $HASHX_URL, then the config file)")
    p.add_argument(
        "--key", help="path of your PEM private key (default: $HASHX_KEY, then the config file)"
    )
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
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
    add.add_argument("new_key", help="PEM private key file of the new key")
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
    create.set_defaults(func=cmd_sets_create)
    grant = sets_sub.add_parser(
        "grant", help="let another organisation read (or publish to) your set"
    )
    grant.add_argument("slug")
    grant.add_argument("organisation")
    grant.add_argument("--publish", action="store_true", help="also allow publishing")
    grant.set_defaults(func=cmd_sets_grant)

    publish = sub.add_parser("publish", help="upload a file of signals into a set (any size)")
    publish.add_argument("--set", required=True, help="slug of the set")
    publish.add_argument(
        "file", help='NDJSON (.ndjson), CSV (.csv) or "<type> <value>" lines (other)'
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
        source.add_argument("--file", help='"<type> <value>" lines')
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

    webhook = sub.add_parser(
        "webhook-verify", help="check a webhook delivery's signature (body and headers files)"
    )
    webhook.add_argument("body", help="file holding the raw request body")
    webhook.add_argument("headers", help='file holding the headers (JSON or "name: value" lines)')
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
    hash_.add_argument("files", nargs="+", metavar="FILE")
    hash_.set_defaults(func=cmd_hash)

    match = sub.add_parser("match", help="match files (hashed here) or hashes against the exchange")
    match.add_argument("files", nargs="*", metavar="FILE", help="hashed locally, never sent")
    match.add_argument("--hashes", help='file of "<type> <value>" lines (- for stdin)')
    match.add_argument("--value", help="one value (with --type)")
    match.add_argument("--type", default="pdq", help="signal type of --value (default: pdq)")
    match.add_argument("--sets", help="comma-separated set slugs (default: every set you read)")
    match.add_argument("--max-distance", type=int, help="pdq: at most this far (default 31)")
    match.set_defaults(func=cmd_match)
    stats = sub.add_parser("stats", help="your organisation's figures: publishing, sets, quotas")
    stats.set_defaults(func=cmd_stats)
    return p


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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(_key_ids_as_operands(argv))
    try:
        args.func(args)
    except UsageError as exc:
        print(f"hashx: {exc}", file=sys.stderr)
        return 2
    except BatchFailed as exc:
        print(f"hashx: {exc}", file=sys.stderr)
        return 1
    except StillMerging as exc:
        print(f"hashx: {exc}", file=sys.stderr)
        return 4
    except KeyboardInterrupt:
        print("hashx: interrupted", file=sys.stderr)
        return 130
    except HashxError as exc:
        print(f"hashx: the exchange refused: {exc}", file=sys.stderr)
        for error in exc.problem.get("errors") or []:
            if isinstance(error, dict):
                print(f"  {error.get('field', '')}: {error.get('message', '')}", file=sys.stderr)
        return 1
    except requests.RequestException as exc:
        print(f"hashx: cannot reach the exchange: {_reason(exc)}", file=sys.stderr)
        return 3
    except OSError as exc:
        # A file named on the command line (upload, list of values, state) is missing or unreadable.
        print(f"hashx: cannot use {exc.filename or 'a file'}: {exc.strerror}", file=sys.stderr)
        return 2
    except UnicodeDecodeError as exc:
        print(f"hashx: a file given is not UTF-8 text: {exc.reason} at byte {exc.start}",
              file=sys.stderr)  # fmt: skip
        return 2
    except sqlite3.Error as exc:
        print(f"hashx: cannot use the local copy: {exc}", file=sys.stderr)
        return 2
    return 0


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
