"""How a checking command ends: the contract cron and restore checks rely on."""

from django.core.management.base import BaseCommand, CommandError


def conclude(command: BaseCommand, *, failure: str, success: str) -> None:
    """Exit 1 with ``failure`` when it is set; otherwise print ``success``."""
    if failure:
        raise CommandError(failure, returncode=1)
    command.stdout.write(command.style.SUCCESS(success))
