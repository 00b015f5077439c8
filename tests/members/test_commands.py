"""Operators create members and add keys from the command line."""

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.management import CommandError, call_command

from hashx.keys import key_id_of, public_pem, raw_public_bytes
from members.models import Organisation, SigningKey

pytestmark = pytest.mark.django_db


@pytest.fixture
def public_key_file(tmp_path):
    key = Ed25519PrivateKey.generate()
    path = tmp_path / "acme.pub.pem"
    path.write_text(public_pem(raw_public_bytes(key.public_key())))
    return key, path


def test_create_member_prints_the_organisation_and_key(public_key_file, capsys):
    key, path = public_key_file
    call_command(
        "create_member", "acme", "--name", "Acme Video", "--public-key", str(path), "--active"
    )
    out = capsys.readouterr().out
    org = Organisation.objects.get(slug="acme")
    assert org.status == "active"
    assert f"id {org.pk}" in out and key_id_of(key) in out


def test_create_member_refuses_a_taken_slug_and_a_bad_key(public_key_file, tmp_path):
    call_command("create_member", "acme", "--name", "Acme")
    with pytest.raises(CommandError, match="exists"):
        call_command("create_member", "acme", "--name", "Acme again")
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    with pytest.raises(CommandError, match="--public-key"):
        call_command("create_member", "other", "--name", "Other", "--public-key", str(bad))
    assert not Organisation.objects.filter(slug="other").exists()


def test_add_key_registers_a_read_only_key(public_key_file, capsys):
    key, path = public_key_file
    call_command("create_member", "acme", "--name", "Acme")
    call_command("add_key", "acme", str(path), "--read-only")
    assert SigningKey.objects.get(key_id=key_id_of(key)).read_only is True
    with pytest.raises(CommandError, match="no organisation"):
        call_command("add_key", "nobody", str(path))
