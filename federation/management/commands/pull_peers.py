from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from federation.actions.pull import do_pull_peer
from federation.models import Peer


class Command(BaseCommand):
    help = "Pull now from every active peer, or from the one named, whatever its schedule."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", nargs="?", help="only this peer")

    def handle(self, *args: Any, **options: Any) -> None:
        peers = Peer.objects.order_by("name")
        if options["name"]:
            peers = peers.filter(name=options["name"])
            if not peers.exists():
                raise CommandError(f"no peer named {options['name']!r}")
        failed = []
        for peer in peers:
            report = do_pull_peer(peer.pk, force=True)
            if report is None:
                continue
            if report.skipped:
                self.stdout.write(f"{peer.name}: skipped ({report.skipped})")
            elif report.error:
                failed.append(peer.name)
                self.stderr.write(f"{peer.name}: FAILED: {report.error}")
            else:
                for slug, counts in report.sets.items():
                    self.stdout.write(
                        f"{peer.name}/{slug}: {counts['applied']} applied ({counts['new']} new,"
                        f" {counts['tombstoned']} tombstones), {counts['refused']} refused"
                    )
                for slug, reason in report.refused_sets.items():
                    self.stdout.write(f"{peer.name}/{slug}: refused: {reason}")
                for slug, count in report.withdrawn.items():
                    self.stdout.write(
                        f"{peer.name}/{slug}: no longer served: {count} mirrored entries tombstoned"
                    )
                if report.push_error:
                    self.stdout.write(f"{peer.name}: push-assist not set up: {report.push_error}")
                if report.opinions_forwarded:
                    self.stdout.write(
                        f"{peer.name}: {report.opinions_forwarded} opinions forwarded"
                    )
        if failed:
            raise CommandError(f"pulls failed: {', '.join(failed)}")
