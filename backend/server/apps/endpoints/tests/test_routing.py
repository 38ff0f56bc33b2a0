import random
from collections import Counter

from apps.endpoints.routing import choose, choose_arm, key_fraction


def test_choose_maps_fractions_onto_cumulative_weights():
    assert [choose("abc", [1, 2, 1], f) for f in (0.0, 0.24, 0.25, 0.74, 0.75, 0.999)] == \
        ["a", "a", "b", "b", "c", "c"]


def test_the_same_key_always_reaches_the_same_arm_within_a_test():
    first = [choose_arm("ab", [1, 1], test_id=5, key=f"user-{i}") for i in range(50)]
    again = [choose_arm("ab", [1, 1], test_id=5, key=f"user-{i}") for i in range(50)]
    assert first == again
    assert set(first) == {"a", "b"}


def test_a_new_test_reshuffles_keys():
    one = [choose_arm("ab", [1, 1], test_id=1, key=f"user-{i}") for i in range(200)]
    two = [choose_arm("ab", [1, 1], test_id=2, key=f"user-{i}") for i in range(200)]
    assert one != two


def test_keys_spread_by_the_weights():
    counts = Counter(choose_arm("ab", [3, 1], test_id=1, key=f"user-{i}") for i in range(4000))
    # 3000 expected; the binomial standard deviation is 27, so ±150 is over five of them.
    assert abs(counts["a"] - 3000) < 150


def test_without_a_key_the_choice_is_random_by_the_weights():
    rng = random.Random(42)
    counts = Counter(choose_arm("abc", [2, 1, 1], test_id=1, rng=rng) for _ in range(4000))
    assert abs(counts["a"] - 2000) < 150 and abs(counts["b"] - 1000) < 120


def test_key_fraction_is_in_the_unit_interval():
    assert all(0 <= key_fraction(1, str(i)) < 1 for i in range(1000))
