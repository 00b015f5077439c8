from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from exchange.problems import Problem
from federation.actions.peering import do_add_peer


class Command(BaseCommand):
    help = (
        "Peer with another exchange: fetch URL/.well-known/hashx, refuse unless its key matches"
        " --fingerprint, then create its organisation (kind peer, so it may read here) and the"
        " peer link this exchange pulls from."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="short name for the peer, e.g. eu-exchange")
        parser.add_argument("url", help="its base URL, e.g. https://hashx.example.org")
        parser.add_argument(
            "--fingerprint", required=True, help="SHA256:… as its `manage.py peer_fingerprint`"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            peer = do_add_peer(options["name"], options["url"], options["fingerprint"])
        except Problem as exc:
            raise CommandError(str(exc.detail)) from None
        self.stdout.write(
            f"peer {peer.name}: {peer.url}, exchange {peer.exchange_id}, key {peer.fingerprint}"
        )
