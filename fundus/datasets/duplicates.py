"""Near-duplicate photos of one eye, grouped so that a split keeps them in one part.

Data sets without patient ids (APTOS 2019) hold the same photo more than once: re-encoded, recropped or
resized copies, often under different grades. Split photo by photo, a copy in the test part would be a
photo the model trained on. ``near_duplicate_groups`` groups photos whose perceptual hashes (``imagehash.phash``:
the sign of each low-frequency DCT coefficient against their median, Zauner 2010) differ in at most
``max_distance`` bits, linking transitively; the loader then gives every photo of a group one patient id, and
``fundus.datasets.splits`` never puts one patient in two parts.

The hash is 16 × 16 = 256 bits: fundus photos look alike at 8 × 8 (a round orange field on black), where the
nearest-neighbour distances of ``../shared/data/aptos2019`` run smoothly from 0 to 20 of 64 bits with no gap; at
16 × 16 the same photos' nearest neighbours are 0–4 bits apart for copies (100 pairs), then nothing closer than 16
bits (different eyes, or another photo of one eye with its own field and exposure). ``MAX_DISTANCE`` lies in
that gap.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Sequence

import numpy as np

HASH_SIZE = 16  # bits per side of the DCT block: 256-bit hashes
MAX_DISTANCE = 10  # bits (of 256) two photos of one group may differ in


@functools.lru_cache(maxsize=65536)
def _phash(path: str, size: int, mtime_ns: int, hash_size: int) -> bytes:
    """The photo's perceptual hash as packed bits (cached per file version in this process)."""
    import imagehash
    from PIL import Image

    with Image.open(path) as im:
        im.draft("L", (hash_size * 16, hash_size * 16))  # JPEG: decode at reduced size (phash resizes anyway)
        bits = imagehash.phash(im, hash_size=hash_size).hash
    return np.packbits(bits.reshape(-1)).tobytes()


def perceptual_hashes(paths: Sequence[Path | str], hash_size: int = HASH_SIZE) -> np.ndarray:
    """``(N, hash_size²)`` bool perceptual hashes of the photos (``imagehash.phash``).

    Raises:
        OSError: a photo that cannot be read.
    """
    rows = []
    for p in paths:
        stat = Path(p).stat()
        packed = _phash(str(p), stat.st_size, stat.st_mtime_ns, hash_size)
        rows.append(np.unpackbits(np.frombuffer(packed, np.uint8))[: hash_size * hash_size])
    return np.array(rows, dtype=bool).reshape(len(rows), hash_size * hash_size)


def group_by_distance(hashes: np.ndarray, max_distance: int = MAX_DISTANCE) -> np.ndarray:
    """``(N,)`` group index of each hash: linked when their Hamming distance is at most ``max_distance``
    (transitively: connected components); groups numbered by their first member."""
    hashes = np.asarray(hashes, dtype=bool)
    n = len(hashes)
    parent = np.arange(n)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    as_int = hashes.astype(np.int16)
    for i in range(n - 1):  # one row of the distance matrix at a time: O(N) memory
        distance = (as_int[i + 1:] != as_int[i]).sum(axis=1)
        for j in np.flatnonzero(distance <= max_distance) + i + 1:
            a, b = root(i), root(int(j))
            if a != b:
                parent[max(a, b)] = min(a, b)
    roots = np.array([root(i) for i in range(n)])
    _, groups = np.unique(roots, return_inverse=True)
    return groups


def near_duplicate_groups(paths: Sequence[Path | str], max_distance: int = MAX_DISTANCE,
                          hash_size: int = HASH_SIZE) -> np.ndarray:
    """``(N,)`` group index of each photo: near-duplicates (perceptual hashes at most ``max_distance`` bits
    apart, transitively) share one; a photo that cannot be read is a group of its own (the training data
    reports it as unreadable later)."""
    readable, hashes = [], []
    for i, p in enumerate(paths):
        try:
            hashes.append(perceptual_hashes([p], hash_size)[0])
        except (OSError, ValueError, SyntaxError):  # PIL: missing, truncated or not an image
            continue
        readable.append(i)
    groups = np.arange(len(paths)) + len(paths)  # unreadable: own groups, renumbered below
    if readable:
        groups[readable] = group_by_distance(np.array(hashes), max_distance)
    return np.unique(groups, return_inverse=True)[1]


def group_sizes(groups: np.ndarray) -> dict[int, int]:
    """How many groups have each size (``{size: groups}``), e.g. ``{1: 2941, 2: 96, 3: 2}``."""
    counts = np.bincount(np.asarray(groups, dtype=np.int64))
    sizes, n = np.unique(counts[counts > 0], return_counts=True)
    return {int(s): int(k) for s, k in zip(sizes, n)}
