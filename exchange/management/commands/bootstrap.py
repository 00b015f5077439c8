from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

from exchange.metrics import reset_multiproc_dir


class Command(BaseCommand):
    help = (
        "Everything a start needs before serving: migrate, collect static files, create the "
        "exchange identity, ensure a staff superuser. Idempotent; `make run` and the compose "
        "`migrate` service run it."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--no-superuser", action="store_true", help="skip ensure_superuser")
        parser.add_argument("--no-static", action="store_true", help="skip collectstatic")

    def handle(self, *args: Any, **options: Any) -> None:
        # Before web, worker and beat start writing samples there: counters start at zero.
        reset_multiproc_dir()
        call_command("migrate", interactive=False, verbosity=1)
        if not options["no_static"]:
            call_command("collectstatic", interactive=False, verbosity=0)
        call_command("init_exchange")
        if not options["no_superuser"]:
            call_command("ensure_superuser")
