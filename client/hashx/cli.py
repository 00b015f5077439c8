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


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hashx",
        description="Talk to a Hash Exchange as a member: identity and keys.",
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
