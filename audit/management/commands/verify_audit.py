from typing import Any

from django.core.management.base import BaseCommand, CommandError

from audit.actions.verify import verify_audit_log


class Command(BaseCommand):
    help = (
        "Recompute the audit hash chain and check every signed checkpoint. Exits non-zero and "
        "names the first bad event if anything was altered, inserted or removed."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        report = verify_audit_log()
        summary = (
            f"{report.events} events, {report.sealed} sealed in an unbroken chain, "
            f"{report.unsealed} awaiting the sealer, {report.checkpoints} checkpoints"
        )
        if not report.ok:
            self.stderr.write(summary)
            for problem in report.problems[1:]:
                self.stderr.write(f"also: {problem}")
            raise CommandError(f"audit log verification FAILED: {report.problems[0]}")
        self.stdout.write(self.style.SUCCESS(f"audit log OK: {summary}"))
