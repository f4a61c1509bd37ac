"""Re-hash every stored file and name those that no longer match their rows.

Each file's SHA-256 and size are recomputed from storage and compared with what was
recorded when it was stored (REGULATORY 40). Prints one line per file that is
missing or altered (its row id and storage name: content hashes, no patient data)
and a summary; exits 1 when any failed, so cron or a restore check can alert on it.
The run is recorded in the audit chain.
"""

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from psi.audit import audit_append
from psi.files import stored_file_check
from psi.models import StoredFile


class Command(BaseCommand):
    help = "Re-hash every stored file; exit non-zero and name any missing or altered."

    def handle(self, *args, **options):
        checked = 0
        failed: dict[str, int] = {"missing": 0, "altered": 0}
        for stored in StoredFile.objects.order_by("pk").iterator(chunk_size=500):
            checked += 1
            problem = stored_file_check(stored)
            if problem:
                failed[problem] += 1
                self.stderr.write(f"file {stored.pk} {stored.storage_name}: {problem}")
        with transaction.atomic():
            audit_append(
                actor=None,
                action="files.verified",
                payload={"checked": checked, **failed},
            )
        if any(failed.values()):
            raise CommandError(
                f"{failed['missing']} missing and {failed['altered']} altered of "
                f"{checked} stored files",
                returncode=1,
            )
        self.stdout.write(self.style.SUCCESS(f"OK: {checked} stored files verified"))
