"""Padded flat draws (xmodality_lite.prng): the same numbers as a draw at the shape, fewer programs."""

import jax
import numpy as np
import pytest

from xmodality_lite import prng

KEY = jax.random.key(5)


@pytest.mark.parametrize("n", [1, 1000, prng.MIN_DRAW, prng.MIN_DRAW + 1, 300_000])
def test_draw_size_is_a_power_of_two_at_least_min_draw_and_n(n):
    size = prng.draw_size(n, KEY)
    assert size >= max(n, prng.MIN_DRAW) and size & (size - 1) == 0
    assert size < 2 * max(n, prng.MIN_DRAW)  # the next one, not any larger


def test_a_draw_is_the_start_of_a_longer_one_cut_to_any_shape():
    """What the padding rests on (JAX's partitionable threefry): element i of a flat draw
    depends on the key and i only, and a draw at a shape numbers its elements row-major."""
    long = jax.random.normal(KEY, (prng.draw_size(60, KEY),))
    for shape in [(60,), (3, 20), (2, 5, 6), (1, 3, 4, 5)]:
        np.testing.assert_array_equal(prng.cut(long, shape), jax.random.normal(KEY, shape))
    rows = jax.vmap(lambda k: jax.random.uniform(k, (prng.MIN_DRAW,)))(jax.random.split(KEY, 3))
    want = jax.vmap(lambda k: jax.random.uniform(k, (1, 4, 5)))(jax.random.split(KEY, 3))
    np.testing.assert_array_equal(prng.cut(rows, (3, 1, 4, 5)), want)  # one row per key


def test_other_key_schemes_draw_exactly_n():
    assert prng.draw_size(10, jax.random.key(0, impl="rbg")) == 10
    with jax.threefry_partitionable(False):
        assert not prng.prefix_draws(KEY) and prng.draw_size(10, KEY) == 10


def test_cut_places_as_a_slice_would_and_traces():
    flat = jax.random.uniform(KEY, (prng.MIN_DRAW,))
    assert not prng.cut(flat, (4, 4)).committed  # on the default device, free to move
    committed = jax.device_put(flat, jax.devices()[0])
    cut = prng.cut(committed, (4, 4))
    assert cut.committed and cut.devices() == committed.devices()
    traced = jax.jit(lambda f: prng.cut(f, (2, 8)))(flat)  # inside a trace: an ordinary slice
    np.testing.assert_array_equal(traced, np.asarray(flat)[:16].reshape(2, 8))
