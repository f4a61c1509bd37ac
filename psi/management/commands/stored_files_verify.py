"""Re-hash every stored file and name those that no longer match their rows.

Each file's SHA-256 and size are recomputed from storage and compared with what was
recorded when it was stored (REGULATORY 40; ``psi.files.stored_files_verify``,
which records the run in the audit chain). Prints one line per file that is missing
or altered (its row id and storage name: content hashes, no patient data) and a
summary; exits 1 when any failed, so cron or a restore check can alert on it.
"""

from django.core.management.base import BaseCommand

from psi.files import stored_files_verify
from psi.management.verdict import conclude


class Command(BaseCommand):
    help = "Re-hash every stored file; exit non-zero and name any missing or altered."

    def handle(self, *args, **options):
        report = stored_files_verify()
        for pk, name, problem in report["failed"]:
            self.stderr.write(f"file {pk} {name}: {problem}")
        conclude(
            self,
            failure=(
                f"{report['missing']} missing and {report['altered']} altered of "
                f"{report['checked']} stored files"
            )
            if report["failed"]
            else "",
            success=f"OK: {report['checked']} stored files verified",
        )
