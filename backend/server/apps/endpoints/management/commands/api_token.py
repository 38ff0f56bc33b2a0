"""Print a user's API token, for clients that change the registry or record feedback.

    python manage.py api_token ops --create-user     # prints the key, nothing else
    TOKEN=$(python manage.py api_token ops)          # the same key again, for scripts
    python manage.py api_token ops --rotate          # a new key; the old one stops working

The key goes to stdout alone; what was created goes to stderr. A user made by --create-user has
no password, so it can use its token but cannot sign in to the admin.
"""
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from rest_framework.authtoken.models import Token


class Command(BaseCommand):
    help = "Print the API token of a user (creating the token, and with --create-user the user)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--create-user", action="store_true",
                            help="create the user (without a password) if it does not exist")
        parser.add_argument("--rotate", action="store_true",
                            help="replace the user's token with a new one")

    def handle(self, *args, username, create_user=False, rotate=False, **options):
        User = get_user_model()
        if not username.strip():
            raise CommandError("the username is empty")
        with transaction.atomic():
            user = User.objects.filter(**{User.USERNAME_FIELD: username}).first()
            if user is None:
                if not create_user:
                    raise CommandError(f"no user {username!r}: pass --create-user to create one")
                try:
                    User._meta.get_field(User.USERNAME_FIELD).run_validators(username)
                except ValidationError as exc:
                    raise CommandError(f"{username!r} is not a valid username: "
                                       f"{' '.join(exc.messages)}") from None
                user = User.objects.create_user(username)
                self.stderr.write(f"created user {username!r} (no password)")
            if not user.is_active:
                raise CommandError(f"user {username!r} is inactive: its token would be refused")
            if rotate:
                Token.objects.filter(user=user).delete()
            token, created = Token.objects.get_or_create(user=user)
        if created:
            self.stderr.write(f"new API token for {username!r}")
        self.stdout.write(token.key)
