"""Predict's per-client rate limit: a fixed-window request counter in Django's cache.

``PREDICT_RATE`` (``1000/second`` by default, ``off`` to disable) is the budget of each client in
rows (a batch of 100 rows counts 100): its token's user when it sends a token, else its IP
address. Behind nginx that address is the one
nginx saw, read from X-Forwarded-For (``NUM_PROXIES``, DRF's rule; a client cannot spoof it
because nginx appends the address it saw last).

The counter lives in the default cache. The local-memory default counts per process, so each
gunicorn worker grants the whole budget; with ``REDIS_URL`` set, every worker of every replica
counts into one Redis key. ``cache.incr`` is atomic in both, so concurrent requests are not
undercounted (DRF's own throttles read and rewrite a history list, and can be). Windows are
aligned to the clock: a client may send up to twice the rate across a window boundary.
If the cache cannot be reached, predictions are served without a limit. One failure opens a
breaker for ``CACHE_RETRY_SECONDS``: the process logs one warning and does not touch the cache
again until then, so an unreachable Redis costs one timeout per interval, not one per request.
"""
import functools
import logging
import re
import time

from django.conf import settings
from django.core import checks
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured
from rest_framework.throttling import BaseThrottle

from apps.endpoints import metrics
from apps.endpoints.exceptions import TooLarge

logger = logging.getLogger(__name__)

PERIODS = {"s": 1, "sec": 1, "second": 1, "seconds": 1,
           "m": 60, "min": 60, "minute": 60, "minutes": 60,
           "h": 3600, "hour": 3600, "hours": 3600,
           "d": 86400, "day": 86400, "days": 86400}


CACHE_RETRY_SECONDS = 30


class CacheBreaker:
    """Whether this process should try the cache now; one warning per outage interval."""

    def __init__(self, retry_seconds: float = CACHE_RETRY_SECONDS, clock=time.monotonic):
        self.retry_seconds = retry_seconds
        self.clock = clock
        self.closed_until = 0.0  # the clock's time before which the cache is not tried

    def allows(self) -> bool:
        return self.clock() >= self.closed_until

    def trip(self, exc: Exception) -> None:
        self.closed_until = self.clock() + self.retry_seconds
        logger.warning("predict rate limit: the cache is unreachable (%s: %s); serving without "
                       "a limit, next try in %ds", type(exc).__name__, exc, self.retry_seconds)


breaker = CacheBreaker()


@functools.lru_cache(maxsize=8)
def parse_rate(text: str) -> tuple[int, int] | None:
    """``"50/second"`` -> (50 rows, 1 second); ``"off"`` or empty -> None (no limit)."""
    value = text.strip().lower()
    if value in {"", "off", "none"}:
        return None
    match = re.fullmatch(r"(\d+)\s*/\s*([a-z]+)", value)
    if not match or match[2] not in PERIODS or int(match[1]) < 1:
        raise ImproperlyConfigured(
            f"PREDICT_RATE={text!r} is not a rate: write <requests>/<period>, the period one of "
            f"second, minute, hour or day (for example 50/second), or 'off' for no limit")
    return int(match[1]), PERIODS[match[2]]


def rows(request) -> int:
    """The rows a predict request asks for: a batch's length, else one.

    A batch predict will refuse anyway (empty, or over PREDICT_BATCH_MAX: 400, 413) counts one,
    so that it is still limited and still answered with why it is refused.
    """
    if not isinstance(request.data, list):
        return 1
    return len(request.data) if 1 <= len(request.data) <= settings.PREDICT_BATCH_MAX else 1


class PredictRateThrottle(BaseThrottle):
    def allow_request(self, request, view) -> bool:
        rate = parse_rate(settings.PREDICT_RATE)
        if rate is None:
            return True
        limit, period = rate
        now = time.time()
        window = int(now // period)
        self.retry_after = (window + 1) * period - now
        if not breaker.allows():
            return True
        asked = rows(request)  # parses the body: a bad one is its 400, not a cache failure
        if asked > limit:  # waiting would not help: say so, rather than 429 forever
            raise TooLarge(f"a batch of {asked} rows is more than this client may send in one "
                           f"period (PREDICT_RATE {settings.PREDICT_RATE}); send smaller batches")
        key = f"throttle:predict:{period}:{window}:{self.client(request)}"
        try:
            cache.add(key, 0, timeout=period + 1)
            count = cache.incr(key, asked)
        except ValueError:  # the key expired between add and incr: its window has just ended
            return True
        except Exception as exc:  # the cache backend's own errors (redis, socket, timeout)
            breaker.trip(exc)
            return True
        if count <= limit:
            return True
        try:
            cache.decr(key, asked)  # refused rows do not spend the budget
        except Exception:  # the window just ended, or the cache just failed: refused all the same
            pass
        metrics.rate_limited.inc()
        return False

    def client(self, request) -> str:
        if request.user.is_authenticated:
            return f"user:{request.user.pk}"
        return f"ip:{self.get_ident(request)}"

    def wait(self) -> float:
        return self.retry_after


@checks.register(checks.Tags.compatibility)
def check_predict_rate(app_configs, **kwargs):
    try:
        parse_rate(settings.PREDICT_RATE)
    except ImproperlyConfigured as exc:
        return [checks.Error(str(exc), id="endpoints.E001")]
    return []
