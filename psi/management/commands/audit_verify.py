"""Recompute the audit chain and name the first broken link.

Exit status 0 with "OK" and the number of events when the chain holds; 1 (and the
first broken link on stderr) when any event was altered, removed or relinked. Cheap
enough for cron and for a CI smoke check of a restored backup.
"""

from django.core.management.base import BaseCommand

from psi.audit import audit_verify
from psi.management.verdict import conclude


class Command(BaseCommand):
    help = "Verify the audit chain; exit non-zero and name the first broken link."

    def add_arguments(self, parser):
        parser.add_argument(
            "--batch-size",
            type=int,
            default=2000,
            help="Events read per database round trip (default 2000).",
        )

    def handle(self, *args, batch_size: int, **options):
        report = audit_verify(batch_size=batch_size)
        conclude(
            self,
            failure=""
            if report.ok
            else (
                f"BROKEN at event #{report.broken_seq}: {report.problem} "
                f"({report.checked} events before it verified)"
            ),
            success=f"OK: {report.checked} audit events verified",
        )
