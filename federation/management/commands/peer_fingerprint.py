from typing import Any

from django.core.management.base import BaseCommand

from exchange.actions.identity import get_identity
from federation.actions.peering import own_fingerprint


class Command(BaseCommand):
    help = "Print this exchange's key fingerprint, to give to a peer's staff out of band."

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(own_fingerprint())
        self.stderr.write(f"exchange id {get_identity().exchange_id}")
