from typing import Any

from django.core.management.base import BaseCommand

from exchange.actions.identity import do_ensure_identity, get_signing_key


class Command(BaseCommand):
    help = "Create the exchange's identity and signing key if missing (idempotent)."

    def handle(self, *args: Any, **options: Any) -> None:
        identity = do_ensure_identity()
        kid, _ = get_signing_key()
        self.stdout.write(f"exchange {identity.exchange_id}, signing key {kid}")
