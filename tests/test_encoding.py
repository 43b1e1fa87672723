import pytest

from multitask.encoding import shard


@pytest.mark.parametrize("n,world", [(7, 2), (200, 2), (3, 4), (10, 3), (0, 2)])
def test_shards_cover_every_sample_exactly_once(n, world):
    parts = [list(shard(n, r, world)) for r in range(world)]
    assert sum(parts, []) == list(range(n))  # contiguous, in order, no padding duplicates
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
