from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from exchange.problems import Problem
from members.actions.keys import do_add_key
from members.actions.organisations import do_create_organisation
from members.management.commands._keyfile import public_key_from_file
from members.models import Organisation


class Command(BaseCommand):
    help = "Create a member organisation (or peer exchange), optionally with its first public key."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug", help="short unique name, e.g. acme-video")
        parser.add_argument("--name", required=True, help="display name")
        parser.add_argument(
            "--kind", choices=[k.value for k in Organisation.Kind], default="member"
        )
        parser.add_argument(
            "--public-key", metavar="PATH", help="public key file: PEM, raw base64 or JWK"
        )
        parser.add_argument("--read-only", action="store_true", help="the key may only read")
        parser.add_argument("--contact-email", default="")
        parser.add_argument(
            "--active", action="store_true", help="approve at once (default: pending)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        public_raw = None
        if options["public_key"]:
            public_raw = public_key_from_file(options["public_key"], "--public-key")
        try:
            with transaction.atomic():
                org = do_create_organisation(
                    options["slug"],
                    options["name"],
                    kind=options["kind"],
                    active=options["active"],
                    contact_email=options["contact_email"],
                )
                key = (
                    do_add_key(org, public_raw, read_only=options["read_only"])
                    if public_raw
                    else None
                )
        except Problem as exc:
            raise CommandError(str(exc.detail)) from None
        self.stdout.write(f"organisation {org.slug} (id {org.pk}, {org.kind}, {org.status})")
        if key is not None:
            self.stdout.write(f"key {key.key_id}")
