"""The README's walk-through, for real over HTTP: `hashx keygen`, `create_member` with that
key, `hashx whoami`; then the CLI adds and lists keys, and fails clearly."""

import json
import stat
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.management import call_command

from hashx.keys import key_id_of, write_private_key
from tests.cli import hashx

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_newcomer_goes_from_keygen_to_whoami(exchange_url, tmp_path):
    key_file, public = tmp_path / "key.pem", tmp_path / "key.pub.pem"
    made = json.loads(
        hashx("--json", "keygen", "--out", str(key_file), "--public-out", str(public)).stdout
    )
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert public.read_text() == made["public_key_pem"]

    call_command(
        "create_member", "acme", "--name", "Acme Video", "--public-key", str(public), "--active"
    )

    out = hashx("whoami", url=exchange_url, key=key_file).stdout
    assert "organisation: acme (Acme Video, member, active)" in out
    assert made["key_id"] in out
    assert json.loads(hashx("--json", "whoami", url=exchange_url, key=key_file).stdout)[
        "permissions"
    ] == [
        "read",
        "write",
    ]


def test_the_cli_adds_lists_and_revokes_keys(exchange_url, tmp_path):
    first, second = tmp_path / "first.pem", tmp_path / "second.pem"
    made = json.loads(hashx("--json", "keygen", "--out", str(first)).stdout)
    (tmp_path / "first.pub").write_text(made["public_key_pem"])
    call_command(
        "create_member",
        "acme",
        "--name",
        "Acme",
        "--public-key",
        str(tmp_path / "first.pub"),
        "--active",
    )
    new_id = json.loads(hashx("--json", "keygen", "--out", str(second)).stdout)["key_id"]

    assert (
        "added key"
        in hashx(
            "keys", "add", str(second), "--label", "laptop", url=exchange_url, key=first
        ).stdout
    )
    listed = hashx("keys", "list", url=exchange_url, key=second).stdout
    assert new_id in listed and "laptop" in listed

    hashx("keys", "revoke", made["key_id"], "--reason", "rotated", url=exchange_url, key=second)
    refused = hashx("whoami", url=exchange_url, key=first, check=False)
    assert refused.returncode == 1
    assert "Revoked key" in refused.stderr


def test_a_key_id_that_begins_with_a_dash_is_an_operand_not_an_option(exchange_url, tmp_path):
    """One key id in 64 begins with '-': copied from `hashx keys list`, it must still work."""
    first, dashed = tmp_path / "first.pem", tmp_path / "dashed.pem"
    made = json.loads(hashx("--json", "keygen", "--out", str(first)).stdout)
    (tmp_path / "first.pub").write_text(made["public_key_pem"])
    call_command(
        "create_member", "acme", "--name", "Acme", "--public-key", str(tmp_path / "first.pub"),
        "--active",
    )  # fmt: skip
    key = Ed25519PrivateKey.generate()
    while not key_id_of(key).startswith("-"):
        key = Ed25519PrivateKey.generate()
    write_private_key(dashed, key)
    hashx("keys", "add", str(dashed), url=exchange_url, key=first)

    soon = (datetime.now(UTC) + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    retired = hashx(
        "keys", "retire", key_id_of(key), "--not-after", soon, url=exchange_url, key=first
    ).stdout
    assert f"key {key_id_of(key)} retires at {soon[:10]}" in retired
    revoked = hashx(
        "keys", "revoke", "--reason", "lost laptop", key_id_of(key), url=exchange_url, key=first
    ).stdout
    assert f"revoked key {key_id_of(key)}" in revoked
    assert "Revoked key" in hashx("whoami", url=exchange_url, key=dashed, check=False).stderr


def test_the_cli_explains_what_is_missing(tmp_path):
    result = hashx("whoami", check=False)
    assert result.returncode == 2
    assert "HASHX_URL" in result.stderr
    result = hashx("whoami", url="http://127.0.0.1:9", key=tmp_path / "none.pem", check=False)
    assert result.returncode == 2 and "cannot read the key" in result.stderr


def test_an_unknown_key_is_reported_with_the_servers_reason(exchange_url, tmp_path):
    key_file = tmp_path / "stranger.pem"
    hashx("keygen", "--out", str(key_file))
    result = hashx("whoami", url=exchange_url, key=key_file, check=False)
    assert result.returncode == 1
    assert "401 Unknown key" in result.stderr


def test_keygen_does_not_overwrite_a_key(tmp_path):
    key_file = tmp_path / "key.pem"
    hashx("keygen", "--out", str(key_file))
    result = hashx("keygen", "--out", str(key_file), check=False)
    assert result.returncode == 2 and "exists" in result.stderr
