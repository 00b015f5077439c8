from pathlib import Path

from django.core.management.base import CommandError

from exchange.problems import Problem
from members.actions.keys import check_public_key


def public_key_from_file(path: str, option: str) -> bytes:
    """The raw Ed25519 public key in a PEM, base64 or JWK file, or a CommandError saying why."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return check_public_key(text, field=option)
    except Problem as exc:
        raise CommandError(str(exc.detail)) from None
