"""Which model of a running A/B test answers a request: weighted, and sticky per client key.

With a key (a user id), the choice is a hash of the test id and the key mapped onto the shares,
so under a fixed split the same key reaches the same model for the whole life of a test, in every
process and replica, with no state to share; a new test reshuffles. Without a key the choice is
random by the shares.

Under Thompson sampling the weights are not fixed: thompson_shares turns each arm's feedback into
its share of traffic, and the service stores the shares on the test's arms as feedback arrives.
The choice above then routes by the stored shares, so a key stays with its model only while the
cumulative shares do not move past the key's fraction; as the shares shift toward the better
model, keys near a boundary move with them. Every arm keeps at least min_share of the traffic,
so the test never stops learning about a model that looks worse.
"""
from __future__ import annotations

import hashlib
import random
from typing import Sequence, TypeVar

import numpy as np

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


def thompson_shares(correct: Sequence[int], feedback: Sequence[int], *, min_share: float = 0.05,
                    draws: int = 20000, rng: np.random.Generator | None = None) -> list[float]:
    """Each arm's share of traffic: min_share plus the rest in proportion to the posterior
    probability that the arm is the most accurate.

    With a uniform prior, an arm's accuracy after ``correct`` right answers out of ``feedback``
    is Beta(1 + correct, 1 + feedback - correct); the probability that each arm is best is
    estimated from ``draws`` joint samples, drawn from a generator seeded by the counts (unless
    ``rng`` is given), so the same feedback always gives the same shares and a user key moves
    only when new feedback moves them. The shares sum to 1 and none is below min_share.
    """
    k = len(correct)
    if k * min_share > 1:
        raise ValueError(f"min_share {min_share} is too large for {k} models: "
                         f"k * min_share must be at most 1")
    right = np.asarray(correct, dtype=float)
    wrong = np.asarray(feedback, dtype=float) - right
    rng = rng or np.random.default_rng([int(c) for c in (*correct, *feedback)])
    samples = rng.beta(1 + right, 1 + wrong, size=(draws, k))
    p_best = np.bincount(samples.argmax(axis=1), minlength=k) / draws
    return [float(x) for x in min_share + (1 - k * min_share) * p_best]
