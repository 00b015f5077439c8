from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from exchange.problems import Problem
from members.actions.keys import do_add_key
from members.management.commands._keyfile import public_key_from_file
from members.models import Organisation


class Command(BaseCommand):
    help = "Register another public key (PEM, raw base64 or JWK file) for an organisation."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("path", help="public key file")
        parser.add_argument("--label", default="")
        parser.add_argument("--read-only", action="store_true", help="the key may only read")

    def handle(self, *args: Any, **options: Any) -> None:
        org = Organisation.objects.filter(slug=options["slug"]).first()
        if org is None:
            raise CommandError(f"no organisation {options['slug']!r}")
        public_raw = public_key_from_file(options["path"], "path")
        try:
            key = do_add_key(
                org, public_raw, label=options["label"], read_only=options["read_only"]
            )
        except Problem as exc:
            raise CommandError(str(exc.detail)) from None
        self.stdout.write(f"key {key.key_id} added to {org.slug}")
