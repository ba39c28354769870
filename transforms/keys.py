"""Content keys and counter-based randomness.

Every random choice in mlmprep is a pure function of (seed, a content-derived
key, a counter), so output never depends on bundles, workers or retries. The
generator is SplitMix64 (Steele et al., 2014) evaluated on counters: it
vectorizes over a whole batch in numpy, which per-row ``np.random.Generator``
objects do not.
"""

import functools
import hashlib
import operator

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_SALT_SPLIT = 0x5EED5A17
_SALT_SEED = 0xA5A5F00D


def content_key(data: bytes) -> int:
    """A stable 63-bit key for a document's text or a sequence's token bytes.

    63 bits, so that Beam's integer coder (signed 64-bit) carries it as is.
    """
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") >> 1


_hash8 = functools.partial(hashlib.blake2b, digest_size=8)
_digest = operator.methodcaller("digest")


def content_keys_of(pieces) -> np.ndarray:
    """``content_key`` of each of an iterable of bytes-like pieces, as uint64 (C-level maps, no loop)."""
    return np.frombuffer(b"".join(map(_digest, map(_hash8, pieces))), dtype="<u8") >> np.uint64(1)


def content_keys(data: bytes, sizes) -> np.ndarray:
    """``content_key`` of consecutive pieces of ``data``, ``sizes`` bytes each."""
    ends = np.cumsum(sizes).tolist()
    view = memoryview(data)
    return content_keys_of(map(view.__getitem__, map(slice, [0, *ends[:-1]], ends)))


def mix64(x):
    """SplitMix64's finalizer: a bijective avalanche of uint64 values (a new array)."""
    x = np.array(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(30)
        x *= _M1
        x ^= x >> np.uint64(27)
        x *= _M2
        x ^= x >> np.uint64(31)
    return x


def record_keys(sequence_keys, *, seed: int, dupe: int) -> np.ndarray:
    """Key of copy ``dupe`` of each sequence: seeds its masking, picks its shard."""
    salt = mix64(np.uint64((seed ^ _SALT_SEED) & 0xFFFFFFFFFFFFFFFF))
    with np.errstate(over="ignore"):
        x = mix64(np.asarray(sequence_keys, dtype=np.uint64) ^ salt)
        return mix64(x + np.uint64(dupe + 1) * _GOLDEN)


UNIFORM_BITS = 53  # what a float64 in [0, 1) holds exactly


def uniform_bits(keys, *, stream: int, columns) -> np.ndarray:
    """53 random bits (uint64 < 2**53) for counter ``(stream, column)`` of each key.

    ``columns`` is an int array broadcast against ``keys`` (e.g. ``keys[:, None]``
    against ``arange(width)``): one draw per (key, column) pair, the same
    whichever other pairs are drawn beside it.
    """
    counters = np.uint64(stream) * np.uint64(1 << 32) + np.asarray(columns, dtype=np.uint64) + np.uint64(1)
    with np.errstate(over="ignore"):
        words = mix64(np.asarray(keys, dtype=np.uint64) + counters * _GOLDEN)
    words >>= np.uint64(64 - UNIFORM_BITS)
    return words


def uniform(keys, *, stream: int, width: int) -> np.ndarray:
    """[len(keys), width] floats in [0, 1): counter ``(stream, column)`` of each key."""
    keys = np.asarray(keys, dtype=np.uint64)
    return to_unit(uniform_bits(keys[:, None], stream=stream, columns=np.arange(width)[None, :]))


def to_unit(bits: np.ndarray) -> np.ndarray:
    """``uniform_bits`` as floats in [0, 1), exactly."""
    return bits.astype(np.float64) * (1.0 / (1 << UNIFORM_BITS))


def split_fractions(document_keys) -> np.ndarray:
    """Where each document falls in [0, 1): independent of seed, so splits never move."""
    salted = np.asarray(document_keys, dtype=np.uint64) ^ np.uint64(_SALT_SPLIT)
    return to_unit(mix64(salted) >> np.uint64(64 - UNIFORM_BITS))
