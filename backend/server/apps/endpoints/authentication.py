"""Credentials as DRF and Django check them, for values that could be credentials.

DRF's tokens and Django's session keys are ASCII letters and digits. Anything else (a NUL above
all, which PostgreSQL refuses in a text comparison) would reach the database as a lookup and
come back as a 500; it is treated as what it is, an unknown credential.
"""
from django.contrib.sessions.backends import db
from rest_framework import authentication, exceptions


def plausible(key: str) -> bool:
    return key.isascii() and key.isalnum()


class TokenAuthentication(authentication.TokenAuthentication):
    def authenticate_credentials(self, key):
        if not plausible(key):
            raise exceptions.AuthenticationFailed("Invalid token.")
        return super().authenticate_credentials(key)


class SessionStore(db.SessionStore):
    """Django's database sessions (``SESSION_ENGINE`` names this module), a cookie that cannot
    be a session key taken as no session."""

    def _validate_session_key(self, key):
        return super()._validate_session_key(key) and plausible(key)
