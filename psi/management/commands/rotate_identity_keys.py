"""Re-encrypt every encrypted identity value under the newest key.

Put the new key first in PSI_IDENTITY_KEYS, keep the old ones after it, run this,
then drop the old keys. Every model of every installed app is searched for
EncryptedTextField columns (simple-history's historical tables included, since they
hold old identity values too); the core names no app.
"""

from django.apps import apps
from django.core.management.base import BaseCommand, CommandError
from django.db import models, transaction
from django.db.models.functions import Cast

from psi.crypto import (
    EncryptedTextField,
    IdentityDecryptionError,
    rotate,
    token_is_current,
)


def encrypted_fields_by_model() -> list[tuple[type[models.Model], list]]:
    found = []
    for model in apps.get_models():
        if model._meta.proxy or not model._meta.managed:
            continue
        fields = [
            field
            for field in model._meta.concrete_fields
            if isinstance(field, EncryptedTextField)
        ]
        if fields:
            found.append((model, fields))
    return found


class Command(BaseCommand):
    help = "Re-encrypt identity values under the newest key in PSI_IDENTITY_KEYS."

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, default=500)
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Count what would be re-encrypted; change nothing.",
        )

    def handle(self, *args, batch_size: int, dry_run: bool, **options):
        totals = {"rows": 0, "values": 0, "rotated": 0}
        for model, fields in encrypted_fields_by_model():
            counts = self._rotate_model(model, fields, batch_size, dry_run)
            for key in totals:
                totals[key] += counts[key]
            self.stdout.write(
                f"{model._meta.label}: {counts['rows']} rows, {counts['values']} "
                f"values, {counts['rotated']} "
                f"{'to re-encrypt' if dry_run else 're-encrypted'}"
            )
        verb = "would be re-encrypted (dry run)" if dry_run else "re-encrypted"
        self.stdout.write(
            self.style.SUCCESS(
                f"{totals['rotated']} of {totals['values']} values in "
                f"{totals['rows']} rows {verb}."
            )
        )

    def _rotate_model(self, model, fields, batch_size: int, dry_run: bool) -> dict:
        counts = {"rows": 0, "values": 0, "rotated": 0}
        pk_name = model._meta.pk.attname
        # Cast to plain text so the ciphertext comes back as stored, not decrypted.
        raw = {
            f"_raw_{field.attname}": Cast(field.attname, models.TextField())
            for field in fields
        }
        manager = model._base_manager
        last_pk = None
        while True:
            with transaction.atomic():
                batch = manager.order_by(pk_name)
                if last_pk is not None:
                    batch = batch.filter(**{f"{pk_name}__gt": last_pk})
                if not dry_run:
                    batch = batch.select_for_update()
                rows = list(
                    batch.annotate(**raw).values_list(pk_name, *raw)[:batch_size]
                )
                for pk, *tokens in rows:
                    counts["rows"] += 1
                    new_values = {}
                    for field, token in zip(fields, tokens, strict=True):
                        if not token:
                            continue
                        counts["values"] += 1
                        if token_is_current(token):
                            continue
                        try:
                            rotated = rotate(token)
                        except IdentityDecryptionError:
                            raise CommandError(
                                f"{model._meta.label} {pk}: {field.name} does not "
                                "decrypt with any key in PSI_IDENTITY_KEYS. Earlier "
                                "batches are done; add the missing key and run "
                                "again (values already rotated are skipped)."
                            ) from None
                        counts["rotated"] += 1
                        new_values[field.attname] = models.Value(
                            rotated, output_field=models.TextField()
                        )
                    if new_values and not dry_run:
                        # QuerySet.update() writes no history row, which is right
                        # here: only the ciphertext changes, never the value, so
                        # there is no change to record. The Value carries a plain
                        # TextField so the new token is not encrypted a second time.
                        manager.filter(**{pk_name: pk}).update(**new_values)
            if len(rows) < batch_size:
                return counts
            last_pk = rows[-1][0]
