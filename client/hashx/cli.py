"""``hashx``: the command line for Hash Exchange members.

Configuration, first match wins: flags (--url, --key), then the environment (HASHX_URL,
HASHX_KEY: path of your PEM private key).
"""

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hashx.client import Client
from hashx.errors import HashxError
from hashx.keys import (
    key_id_of,
    load_private_key,
    public_jwk,
    public_pem,
    raw_public_bytes,
    write_private_key,
)


class UsageError(Exception):
    pass


def _client(args: argparse.Namespace) -> Client:
    url = args.url or os.environ.get("HASHX_URL")
    key_path = args.key or os.environ.get("HASHX_KEY")
    if not url:
        raise UsageError(
            "no exchange URL: pass --url or set HASHX_URL (e.g. http://127.0.0.1:8000)"
        )
    if not key_path:
        raise UsageError(
            "no key: pass --key or set HASHX_KEY to the path of your private key (hashx keygen)"
        )
    try:
        key = load_private_key(key_path)
    except OSError as exc:
        raise UsageError(f"cannot read the key {key_path}: {exc.strerror}") from None
    except ValueError as exc:
        raise UsageError(f"{key_path} is not a PEM Ed25519 private key: {exc}") from None
    return Client(url, key)


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
        report = client.wait_for_batch(
            answer["batch"],
            progress=lambda r: progress.show(
                f"merging {int(100 * r['progress'])}% ({r['merged']:,} lines)"
            ),
        )
    progress.done()
    text = [
        f"batch {answer['batch']}: {answer['accepted']:,} accepted, {answer['rejected']:,} rejected"
        f" of {answer['received']:,}"
    ]
    if "new" in report:
        text.append(
            f"merged: {report['new']:,} new, {report['updated']:,} updated,"
            f" {report['duplicate']:,} duplicate"
        )
    text += [f"  {r.get('line', r.get('index'))}: {r['reason']}" for r in answer["rejections"][:20]]
    if answer["rejected"] > 20:
        text.append(f"  … {answer['rejected'] - 20:,} more rejections (--json lists them)")
    _print(args, {"answer": answer, "report": report}, "\n".join(text))


def _items_from(args: argparse.Namespace) -> list[dict[str, Any]]:
    if args.value:
        return [{"type": args.type, "value": args.value}]
    items = []
    for line in Path(args.file).read_text().splitlines():
        kind, _, value = line.strip().partition(" ")
        if kind and not kind.startswith("#"):
            items.append({"type": kind, "value": value})
    return items


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


def cmd_batch(args: argparse.Namespace) -> None:
    report = _client(args).batch(args.batch_id)
    _print(args, report, "\n".join(f"{k}: {v}" for k, v in report.items()))


def cmd_sync(args: argparse.Namespace) -> None:
    """Append every change after the saved cursor to --out (NDJSON), then save the new cursor:
    run it on a schedule and never miss a change or a retraction."""
    state_path = Path(args.state)
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    sets = args.sets.split(",") if args.sets else None
    if state.get("sets") not in (None, sets):
        raise UsageError(f"{args.state} follows other sets ({state['sets']}); use another --state")
    client, progress, count = _client(args), _Progress(), 0
    start = cursor = state.get("cursor", "")
    with Path(args.out).open("a") as out:
        # At least once: stopped half-way, the next run appends again from the saved cursor.
        for change, page_cursor in client.iter_changes(sets=sets, cursor=start, limit=args.limit):
            out.write(json.dumps(change) + "\n")
            cursor = page_cursor
            count += 1
            progress.show(f"synced {count:,} changes")
    progress.done()
    state_path.write_text(json.dumps({"sets": sets, "cursor": cursor}) + "\n")
    _print(args, {"changes": count, "cursor": cursor}, f"{count:,} changes appended to {args.out}")


def _hash_files(paths: list[str]) -> list[Any]:
    from hashx.media import MediaExtraMissing, file_hashes

    found = []
    for path in paths:
        try:
            found.extend(file_hashes(path))
        except MediaExtraMissing as exc:
            raise UsageError(str(exc)) from None
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror}") from None
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
        for line in text.splitlines():
            kind, _, value = line.strip().partition(" ")
            if kind and not kind.startswith("#"):
                queries.append({"type": kind, "value": value.strip()})
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


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hashx",
        description="Talk to a Hash Exchange as a member: identity, keys, sets, publishing.",
        epilog="Start with `hashx keygen --out key.pem`, have the exchange register the public "
        "key, then `HASHX_URL=… HASHX_KEY=key.pem hashx whoami`.",
    )
    p.add_argument("--url", help="exchange base URL (default: $HASHX_URL)")
    p.add_argument("--key", help="path of your PEM private key (default: $HASHX_KEY)")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
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

    sync = sub.add_parser("sync", help="append every change since the last sync to a file")
    sync.add_argument("--sets", help="comma-separated set slugs (default: every set you read)")
    sync.add_argument("--state", default="hashx-sync.json", help="where the cursor is kept")
    sync.add_argument(
        "--out", default="hashx-changes.ndjson", help="NDJSON file the changes are appended to"
    )
    sync.add_argument("--limit", type=int, default=5000, help="changes per request")
    sync.set_defaults(func=cmd_sync)

    batch = sub.add_parser("batch", help="the state and counts of a publish batch")
    batch.add_argument("batch_id")
    batch.set_defaults(func=cmd_batch)

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
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        args.func(args)
    except UsageError as exc:
        print(f"hashx: {exc}", file=sys.stderr)
        return 2
    except HashxError as exc:
        print(f"hashx: the exchange refused: {exc}", file=sys.stderr)
        return 1
    except requests.RequestException as exc:
        print(f"hashx: cannot reach the exchange: {exc}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
