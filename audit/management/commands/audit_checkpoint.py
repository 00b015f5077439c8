from typing import Any

from django.core.management.base import BaseCommand

from audit.actions.checkpoint import do_sign_checkpoint
from audit.actions.seal import do_seal_pending


class Command(BaseCommand):
    help = "Seal pending audit events and sign a checkpoint of the chain head now."

    def handle(self, *args: Any, **options: Any) -> None:
        sealed = do_seal_pending(wait=True).sealed
        cp = do_sign_checkpoint()
        assert cp is not None
        self.stdout.write(
            f"sealed {sealed}; checkpoint {cp.pk}: tree size {cp.tree_size}, head {cp.head_hash}"
        )
