"""Who may do what: reading is open; every write needs an API token or a staff user.

The default permission for the whole API (``REST_FRAMEWORK["DEFAULT_PERMISSION_CLASSES"]``).
Predict opts out of it (open, rate-limited instead: see throttling.py); everything else that
writes (registering endpoints and models, setting statuses, starting and stopping A/B tests,
recording feedback) is refused: 401 without credentials, 403 for a signed-in non-staff user.
"""
from rest_framework.authtoken.models import Token
from rest_framework.exceptions import NotAuthenticated
from rest_framework.permissions import SAFE_METHODS, BasePermission

NEEDS = ("needs an API token (header 'Authorization: Token <key>'; an operator prints one with "
         "'manage.py api_token <username>') or a staff user's session")


def is_trusted(request) -> bool:
    """An API token's bearer or a staff user: who may write, and read operational details."""
    return isinstance(request.auth, Token) or request.user.is_staff


class TokenOrStaff(BasePermission):
    """For what not even reading is open: every method needs a token or a staff user."""

    message = f"this {NEEDS}"

    def has_permission(self, request, view) -> bool:
        if is_trusted(request):
            return True
        if not request.user.is_authenticated:
            raise NotAuthenticated(f"{request.method} {request.path} {NEEDS}")
        return False


class ReadOrTokenOrStaff(BasePermission):
    message = f"changing the registry or recording feedback {NEEDS}"

    def has_permission(self, request, view) -> bool:
        if request.method in SAFE_METHODS:
            return True
        if is_trusted(request):
            return True
        if not request.user.is_authenticated:
            raise NotAuthenticated(f"{request.method} {request.path} {NEEDS}")
        return False
