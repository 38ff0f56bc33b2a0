"""Which model of a running A/B test answers a request: weighted, and sticky per client key.

With a key (a user id), the choice is a hash of the test id and the key mapped onto the weights,
so the same key reaches the same model for the whole life of a test, in every process and replica,
with no state to share; a new test reshuffles. Without a key the choice is random by the weights.
"""
from __future__ import annotations

import hashlib
import random
from typing import Sequence, TypeVar

T = TypeVar("T")

# How a client passes its stable key to the predict URL: ?user_id= (PredictQuerySerializer),
# or this header.
USER_KEY_HEADER = "X-User-Id"


def key_fraction(test_id: int, key: str) -> float:
    """A number in [0, 1), uniform over keys and fixed for a (test, key) pair."""
    digest = hashlib.sha256(f"{test_id}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def choose(options: Sequence[T], weights: Sequence[float], fraction: float) -> T:
    """The option whose share of the total weight contains ``fraction`` (in [0, 1))."""
    target = fraction * sum(weights)
    cumulative = 0.0
    for option, weight in zip(options, weights):
        cumulative += weight
        if target < cumulative:
            return option
    return options[-1]  # fraction * total rounding up to total


def choose_arm(options: Sequence[T], weights: Sequence[float], *, test_id: int,
               key: str | None = None, rng: random.Random | None = None) -> T:
    fraction = key_fraction(test_id, key) if key else (rng or random).random()
    return choose(options, weights, fraction)
