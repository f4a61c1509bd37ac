"""Create an API token for an integration account; the token is printed once."""

import datetime

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from knox.settings import knox_settings

from psi.api.tokens import api_token_create


class Command(BaseCommand):
    help = "Create an API token for a user (integrations); prints it once."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument(
            "--expiry-hours",
            type=int,
            default=None,
            help="Hours until the token expires (default: PSI_TOKEN_TTL_HOURS).",
        )

    def handle(self, *args, username: str, expiry_hours: int | None, **options):
        User = get_user_model()
        try:
            user = User.objects.get(**{User.USERNAME_FIELD: username})
        except User.DoesNotExist:
            raise CommandError(f"No user named {username!r}.") from None
        if not user.is_active:
            raise CommandError(f"{username!r} is deactivated.")
        expiry = (
            datetime.timedelta(hours=expiry_hours)
            if expiry_hours
            else knox_settings.TOKEN_TTL
        )
        instance, token = api_token_create(
            actor=None, user=user, expiry=expiry, via="create_api_token"
        )
        self.stdout.write(token)
        when = (
            f"expires {instance.expiry:%Y-%m-%d %H:%M} UTC"
            if instance.expiry
            else "never expires"
        )
        self.stderr.write(f"Token for {username} ({when}); it is not shown again.")
