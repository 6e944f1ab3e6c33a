"""The sampling hash: a uniform u in (0, 1] from (seed, request id) that anyone can recompute.

Specification (reproducible without whylake, in any language with BLAKE2b):

    h = BLAKE2b-64( UTF-8( f"{seed}:{request_id}" ) )   # digest_size = 8, no key, no salt
    h = int.from_bytes(h, "big")                         # unsigned 64-bit integer
    u = ((h >> 11) + 1) / 2**53                          # top 53 bits, shifted into (0, 1]

with ``seed`` written in decimal. In Python::

    from hashlib import blake2b
    h = int.from_bytes(blake2b(f"{seed}:{request_id}".encode(), digest_size=8).digest(), "big")
    u = ((h >> 11) + 1) / 2**53

Only the top 53 bits are kept so that every u is a float64 *exactly* (2**53 values spaced
2**-53 apart): numpy, SQL engines and JVMs then agree on u bit for bit instead of rounding a
64-bit integer differently. u is never 0, so a priority w / u is always finite.
"""

from __future__ import annotations

from collections.abc import Iterable
from hashlib import blake2b

import numpy as np
import numpy.typing as npt

_DIGEST_BYTES = 8
_SHIFT = 64 - 53
_SCALE = 2.0**-53


def hash_prefix(seed: int) -> bytes:
    """The bytes every hashed message starts with for this seed."""
    return f"{seed}:".encode()


def uniform_from_hash(request_id: str, seed: int) -> float:
    """The reference (scalar) u in (0, 1] for one request id; the docstring formula verbatim."""
    digest = blake2b(f"{seed}:{request_id}".encode(), digest_size=_DIGEST_BYTES).digest()
    h = int.from_bytes(digest, "big")
    return ((h >> _SHIFT) + 1) / 2**53


def uniforms_from_hash(request_ids: Iterable[str], seed: int) -> npt.NDArray[np.float64]:
    """u for many request ids at once; equal, element by element, to `uniform_from_hash`."""
    # BLAKE2b is a streaming hash, so hashing the shared prefix once and copying the state is
    # the same digest as hashing prefix + id (about 0.4 s per million ids on one core).
    base = blake2b(hash_prefix(seed), digest_size=_DIGEST_BYTES)
    digests = []
    for request_id in request_ids:
        state = base.copy()
        state.update(request_id.encode())
        digests.append(state.digest())
    h = np.frombuffer(b"".join(digests), dtype=">u8")
    # (h >> 11) + 1 <= 2**53 is exact in float64 and the scale is a power of two: no rounding.
    return (((h >> np.uint64(_SHIFT)) + np.uint64(1)).astype(np.float64)) * _SCALE
