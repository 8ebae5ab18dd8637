"""Exact and near duplicates, and images found under both a positive and a negative query."""

import numpy as np
import pytest

from labelfree.ingest.dedupe import dedupe, near_pairs, perceptual_hash, phash_to_int

A, B, C = 0x0F0F_0F0F_0F0F_0F0F, 0xFFFF_0000_FFFF_0000, 0x1234_5678_9ABC_DEF0


def test_exact_duplicates_keep_the_first():
    r = dedupe(["s1", "s2", "s1"], [A, B, A], ["positive"] * 3)
    assert r.keep == [0, 1] and r.exact_duplicates == 1 and r.near_duplicates == 0
    assert r.dropped == {2: "exact_duplicate"}


def test_near_duplicates_within_distance():
    near_a = A ^ 0b111  # 3 bits differ
    r = dedupe(["s1", "s2", "s3"], [A, near_a, C], ["negative"] * 3, max_distance=4)
    assert r.keep == [0, 2] and r.near_duplicates == 1
    r = dedupe(["s1", "s2", "s3"], [A, near_a, C], ["negative"] * 3, max_distance=2)
    assert r.keep == [0, 1, 2]


def test_positive_negative_conflict_drops_every_copy():
    r = dedupe(["s1", "s2", "s1", "s4"], [A, B, A, A ^ 1], ["positive", "positive", "negative", "negative"])
    assert r.keep == [1]
    assert r.conflict_groups == 1 and r.conflict_images == 3
    assert set(r.dropped.values()) == {"conflict"}


def test_groups_are_transitive_and_none_phash_matches_by_sha_only():
    chain = [A, A ^ 0b1111, A ^ 0b1111_1111]  # 0-1 and 1-2 within 4 bits, 0-2 not
    r = dedupe(["a", "b", "c", "d"], chain + [None], ["positive"] * 4)
    assert r.keep == [0, 3] and r.near_duplicates == 2


def test_near_pairs_and_validation():
    hashes = np.array([A, A ^ 1, B], dtype=np.uint64)
    assert near_pairs(hashes, 1) == [(0, 1)]
    with pytest.raises(ValueError, match="uint64"):
        near_pairs(np.array([1, 2]), 1)
    with pytest.raises(ValueError, match="lengths differ"):
        dedupe(["a"], [], ["positive"])
    assert phash_to_int("ffffffffffffffff") == 2**64 - 1
    with pytest.raises(ValueError, match="wider"):
        phash_to_int("1" * 17)


def test_perceptual_hash_tracks_imagehash_and_survives_recompression():
    import io

    import imagehash
    from PIL import Image

    from tests.ingest.conftest import photo

    img = Image.open(io.BytesIO(photo(3, size=300)))
    h = phash_to_int(perceptual_hash(img))
    assert bin(h ^ phash_to_int(str(imagehash.phash(img)))).count("1") <= 4
    recompressed = Image.open(io.BytesIO(photo(3, size=300, quality=40)))
    other = Image.open(io.BytesIO(photo(4, size=300)))
    assert bin(h ^ phash_to_int(perceptual_hash(recompressed))).count("1") <= 4
    assert bin(h ^ phash_to_int(perceptual_hash(other))).count("1") > 10
