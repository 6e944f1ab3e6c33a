"""The sampling hash is the documented formula, exact in float64, and uniform on (0, 1]."""

from __future__ import annotations

from hashlib import blake2b

import numpy as np

from whylake.transforms.sampling import uniform_from_hash, uniforms_from_hash


def test_hash_matches_the_documented_formula_and_a_pinned_value() -> None:
    # Pinned so that a change of formula (which would change every past sample) is noticed.
    assert blake2b(b"20261122:acme-20261121-00000001", digest_size=8).hexdigest() == (
        "6c06faf14365f395"
    )
    h = 0x6C06FAF14365F395
    assert uniform_from_hash("acme-20261121-00000001", 20261122) == ((h >> 11) + 1) / 2**53
    assert uniform_from_hash("acme-20261121-00000001", 20261122) == 0.4219815100690524


def test_vectorised_hash_equals_the_scalar_reference_bit_for_bit() -> None:
    ids = [f"req-{i}" for i in range(2000)] + ["", "ü-é-日本", "a:b:c", " spaced "]
    vectorised = uniforms_from_hash(ids, 7)
    assert vectorised.dtype == np.float64
    assert vectorised.tolist() == [uniform_from_hash(r, 7) for r in ids]


def test_hash_is_uniform_on_the_half_open_unit_interval() -> None:
    u = uniforms_from_hash((f"r{i}" for i in range(20_000)), 3)
    assert u.min() > 0.0 and u.max() <= 1.0
    # Mean and variance of U(0, 1) within 4 standard errors of their sample estimates.
    n = len(u)
    assert abs(u.mean() - 0.5) < 4 * np.sqrt(1 / 12 / n)
    assert abs(u.var() - 1 / 12) < 4 * np.sqrt(1 / 180 / n)


def test_seed_changes_the_draw() -> None:
    ids = [f"r{i}" for i in range(100)]
    assert not np.array_equal(uniforms_from_hash(ids, 1), uniforms_from_hash(ids, 2))
