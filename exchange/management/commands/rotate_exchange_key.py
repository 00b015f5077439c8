from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser

from exchange.actions.identity import do_finish_key_rotation, do_prepare_key_rotation


class Command(BaseCommand):
    help = (
        "Rotate the exchange's signing key in two steps: first make and publish the next key,"
        " endorsed by the current one (peers follow it at their next pull); then, with --finish,"
        " make it current."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--finish", action="store_true", help="make the next key current")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            if options["finish"]:
                key = do_finish_key_rotation()
                self.stdout.write(f"signing with SHA256:{key.kid} now")
            else:
                key = do_prepare_key_rotation()
                self.stdout.write(
                    f"next key SHA256:{key.kid} published, endorsed by SHA256:{key.endorsed_by};"
                    " once every peer has pulled, run rotate_exchange_key --finish"
                )
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from None
