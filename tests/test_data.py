"""Packing, shards and batch sampling: no token lost, exact shifts, reproducible randomness."""

import numpy as np
import pytest
import torch

from nanollm.data import MixtureSampler, get_batch, iterate_batches, pack, read_shard, \
    token_dtype, write_shard
from nanollm.errors import DataError

SEP = 0


def _docs():
    rng = np.random.default_rng(0)
    return [list(rng.integers(1, 50, size=n)) for n in (7, 1, 13, 4, 9, 2)]


def _stream(docs, sep):
    return [t for doc in docs for t in list(doc) + [sep]]


@pytest.mark.parametrize("block_size", [1, 4, 8, 43, 100])
def test_pack_loses_no_token(block_size):
    docs = _docs()
    stream = _stream(docs, SEP)  # 36 + 6 separators = 42 tokens
    windows, dropped = pack(docs, SEP, block_size)
    assert windows.shape[1] == block_size + 1
    if len(windows) == 0:
        assert dropped == len(stream)
        return
    # Window 0 whole, then every later window minus the token it shares with the previous one.
    rebuilt = list(windows[0]) + [t for w in windows[1:] for t in w[1:]]
    assert rebuilt + stream[len(rebuilt):] == stream
    assert len(rebuilt) + dropped == len(stream)
    assert dropped < block_size  # a full window's worth of new tokens is never thrown away
    for prev, nxt in zip(windows[:-1], windows[1:]):
        assert prev[-1] == nxt[0]


def test_pack_exact_windows_for_a_small_case():
    windows, dropped = pack([[1, 2, 3], [4, 5]], sep=9, block_size=3)
    # stream: 1 2 3 9 4 5 9 -> [1 2 3 9], [9 4 5 9]
    assert windows.tolist() == [[1, 2, 3, 9], [9, 4, 5, 9]]
    assert dropped == 0
    windows, dropped = pack([[1, 2, 3], [4, 5, 6]], sep=9, block_size=3)
    assert windows.tolist() == [[1, 2, 3, 9], [9, 4, 5, 6]] and dropped == 1


def test_targets_are_inputs_shifted_by_one():
    data = np.arange(1000, dtype=np.uint16)  # token value = its position
    g = torch.Generator().manual_seed(0)
    x, y = get_batch(data, batch_size=8, block_size=16, generator=g)
    assert x.shape == y.shape == (8, 16)
    assert x.dtype == y.dtype == torch.int64
    assert torch.equal(y, x + 1)
    assert torch.equal(x[:, 1:], y[:, :-1])


def test_get_batch_reaches_the_last_token_and_stays_in_range():
    data = np.arange(10, dtype=np.uint16)
    g = torch.Generator().manual_seed(0)
    seen_last = False
    for _ in range(100):
        x, y = get_batch(data, batch_size=4, block_size=3, generator=g)
        assert y.max() <= 9
        seen_last |= bool((y == 9).any())
    assert seen_last


def test_get_batch_is_reproducible_from_generator_state():
    data = np.arange(5000, dtype=np.uint32)
    g1 = torch.Generator().manual_seed(123)
    g2 = torch.Generator().manual_seed(123)
    for _ in range(3):
        a, b = get_batch(data, 4, 32, g1), get_batch(data, 4, 32, g2)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    # Resuming from a saved state continues the same sequence.
    state = g1.get_state()
    expected = get_batch(data, 4, 32, g1)[0]
    g3 = torch.Generator()
    g3.set_state(state)
    assert torch.equal(get_batch(data, 4, 32, g3)[0], expected)
    other = get_batch(data, 4, 32, torch.Generator().manual_seed(124))[0]
    assert not torch.equal(other, expected)


def test_get_batch_rejects_too_short_data():
    with pytest.raises(DataError, match="the data has 8 tokens, fewer than one window"):
        get_batch(np.arange(8), 2, 8, torch.Generator())


def test_token_dtype_choice():
    assert token_dtype(2048) == np.uint16
    assert token_dtype(2**16) == np.uint16  # ids 0..65535 still fit
    assert token_dtype(2**16 + 1) == np.uint32
    assert token_dtype(100_000) == np.uint32


@pytest.mark.parametrize("vocab_size, dtype", [(2048, np.uint16), (100_000, np.uint32)])
def test_shard_round_trip(tmp_path, vocab_size, dtype):
    ids = np.random.default_rng(0).integers(0, vocab_size, size=1234)
    path = write_shard(str(tmp_path / "sub" / "train.bin"), ids, vocab_size)
    assert (tmp_path / "sub" / "train.bin").stat().st_size == ids.size * np.dtype(dtype).itemsize
    assert not (tmp_path / "sub" / "train.bin.tmp").exists()
    shard = read_shard(path, vocab_size=vocab_size)
    assert isinstance(shard, np.memmap) and shard.dtype == dtype and shard.ndim == 1
    assert np.array_equal(shard, ids)
    assert np.array_equal(read_shard(path, dtype=dtype), ids)


def test_write_shard_refuses_ids_that_do_not_fit(tmp_path):
    with pytest.raises(ValueError, match=r"\[0, 2048\)"):
        write_shard(str(tmp_path / "bad.bin"), [1, 2, 2048], vocab_size=2048)


def test_read_shard_with_wrong_dtype_size_is_an_error(tmp_path):
    path = write_shard(str(tmp_path / "odd.bin"), [1, 2, 3], vocab_size=2048)  # 6 bytes
    with pytest.raises(DataError, match="whole number"):
        read_shard(path, dtype=np.uint32)


def test_mixture_with_zero_weight_never_draws_that_source():
    a = np.full(100, 1, dtype=np.uint16)
    b = np.full(100, 2, dtype=np.uint16)
    sampler = MixtureSampler({"a": a, "b": b}, {"a": 1.0, "b": 0.0}, batch_size=16,
                             block_size=8, generator=torch.Generator().manual_seed(0))
    for _ in range(20):
        x, y = sampler.batch()
        assert x.shape == (16, 8) and torch.all(x == 1) and torch.all(y == 1)


def test_mixture_ratio_follows_weights():
    a = np.full(100, 1, dtype=np.uint16)
    b = np.full(50, 2, dtype=np.uint16)  # shorter source: the ratio depends on weights only
    sampler = MixtureSampler({"a": a, "b": b}, {"a": 3.0, "b": 1.0}, batch_size=64,
                             block_size=8, generator=torch.Generator().manual_seed(0))
    rows_from_a = sum((sampler.batch()[0][:, 0] == 1).sum().item() for _ in range(50))
    share_a = rows_from_a / (50 * 64)
    assert abs(share_a - 0.75) < 0.03  # 3200 draws: the standard error is ~0.008


def test_mixture_rejects_bad_configuration():
    g = torch.Generator()
    data = np.arange(100)
    with pytest.raises(ValueError, match="not all zero"):
        MixtureSampler({"a": data}, {"a": 0.0}, 2, 8, g)
    with pytest.raises(ValueError, match="non-negative"):
        MixtureSampler({"a": data, "b": data}, {"a": 1.0, "b": -1.0}, 2, 8, g)
    with pytest.raises(ValueError, match="source 'b'"):
        MixtureSampler({"a": data, "b": data[:5]}, {"a": 1.0, "b": 1.0}, 2, 8, g)
    with pytest.raises(ValueError, match="same names"):
        MixtureSampler({"a": data}, {"a": 1.0, "c": 1.0}, 2, 8, g)


def test_iterate_batches_covers_each_target_once():
    data = np.arange(103, dtype=np.uint16)
    batches = list(iterate_batches(data, batch_size=4, block_size=10))
    assert [x.shape[0] for x, _ in batches] == [4, 4, 2]  # 10 windows of 10 targets
    targets = torch.cat([y.reshape(-1) for _, y in batches]).tolist()
    assert targets == list(range(1, 101))  # every target once, in order; tail 101, 102 skipped
    for x, y in batches:
        assert torch.equal(y, x + 1)
    assert len(list(iterate_batches(data, 4, 10, max_batches=2))) == 2
