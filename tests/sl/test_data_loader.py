"""ShardLoader: seeded epochs, equal DDP shards, shuffle across shards, exact mid-epoch resume."""

from __future__ import annotations

import numpy as np
import torch

from runyard.data import Normalizer, ShardLoader, load_manifest, plan_epoch


def keys(images):
    return [bytes(image.numpy().tobytes()) for image in images]


def test_epoch_plan_splits_ranks_evenly_and_covers_the_epoch():
    counts = [100, 100, 37]
    parts = [plan_epoch(counts, batch_size=8, seed=0, epoch=3, shuffle=True, shuffle_buffer=64,
                        rank=rank, world_size=3, drop_last=True) for rank in range(3)]
    assert len({len(rows) for _, rows in parts}) == 1  # same number of steps on every rank
    seen = [(int(s), int(r)) for shard_ids, rows in parts for s, r in zip(shard_ids, rows)]
    assert len(seen) == len(set(seen))  # no example twice in an epoch
    assert len(seen) == 3 * (237 // 3 // 8 * 8)
    again = plan_epoch(counts, batch_size=8, seed=0, epoch=3, shuffle=True, shuffle_buffer=64,
                       rank=1, world_size=3, drop_last=True)
    assert all(np.array_equal(a, b) for a, b in zip(again, parts[1]))
    other_epoch = plan_epoch(counts, batch_size=8, seed=0, epoch=4, shuffle=True,
                             shuffle_buffer=64, rank=1, world_size=3, drop_last=True)
    assert not np.array_equal(other_epoch[1], parts[1][1])
    # Evaluation: every example exactly once over the ranks, nothing dropped.
    evaluation = [plan_epoch(counts, batch_size=8, seed=0, epoch=0, shuffle=False,
                             shuffle_buffer=1, rank=rank, world_size=3, drop_last=False)
                  for rank in range(3)]
    assert sum(len(rows) for _, rows in evaluation) == 237


def test_loader_batches_are_uint8_and_shuffled_across_shards(synth_shards):
    loader = ShardLoader(synth_shards, "train", 32, seed=0, shuffle_buffer=200)
    images, labels = next(iter(loader))
    assert images.dtype == torch.uint8 and images.shape == (32, 32, 32, 3)
    assert labels.dtype == torch.int64
    shard_ids, _ = plan_epoch(loader.counts, batch_size=32, seed=0, epoch=0, shuffle=True,
                              shuffle_buffer=200, rank=0, world_size=1, drop_last=True)
    assert len(set(shard_ids[:32].tolist())) > 1
    epoch_images = torch.cat([batch for batch, _ in loader])
    assert len(set(keys(epoch_images))) == len(epoch_images) == 320 // 32 * 32


def test_resident_and_streamed_give_identical_batches_and_resume_mid_epoch(synth_shards):
    streamed = ShardLoader(synth_shards, "train", 16, seed=5, shuffle_buffer=150)
    resident = ShardLoader(synth_shards, "train", 16, seed=5, shuffle_buffer=150, resident=True)
    full = list(streamed.batches(2))
    for (a, la), (b, lb) in zip(full, resident.batches(2)):
        assert torch.equal(a, b) and torch.equal(la, lb)
    resumed = list(streamed.batches(2, start=7))
    assert len(resumed) == len(full) - 7
    assert all(torch.equal(a[0], b[0]) for a, b in zip(resumed, full[7:]))


def test_ddp_ranks_read_disjoint_data(synth_shards):
    ranks = [ShardLoader(synth_shards, "train", 8, seed=1, rank=r, world_size=2) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1])
    seen = [set(keys(torch.cat([b for b, _ in loader]))) for loader in ranks]
    assert not seen[0] & seen[1]


def test_normalizer_uses_manifest_statistics(synth_shards):
    manifest = load_manifest(synth_shards)
    normalize = Normalizer(manifest["pixel_mean"], manifest["pixel_std"])
    images = torch.cat([b for b, _ in ShardLoader(synth_shards, "train", 64, shuffle=False)])
    x = normalize(images)
    assert x.shape == (len(images), 3, 32, 32)
    assert torch.allclose(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=0.05)
    assert torch.allclose(x.std(dim=(0, 2, 3)), torch.ones(3), atol=0.05)


def test_shards_are_memory_mapped_and_equal_pyarrows_decoding(synth_shards):
    import pyarrow.parquet as pq

    from runyard.data.shards import _mapped_pixels

    manifest = load_manifest(synth_shards)
    for shard in manifest["splits"]["train"]["shards"]:
        path = synth_shards / shard["file"]
        mapped = _mapped_pixels(path, pq.ParquetFile(path).metadata, (32, 32, 3))
        assert mapped is not None, "prepared shards should be readable without decoding"
        column = pq.read_table(path).column("image").to_pylist()
        decoded = np.frombuffer(b"".join(column), np.uint8).reshape(-1, 32, 32, 3)
        np.testing.assert_array_equal(mapped, decoded)


def test_counts_match_the_plan_for_every_rank(synth_shards):
    for shuffle in (True, False):
        for rank in range(3):
            loader = ShardLoader(synth_shards, "train", 24, shuffle=shuffle, rank=rank, world_size=3)
            assert loader.num_examples == len(loader._plan(0)[0])
            assert len(loader) == len(list(loader.batches(0)))


def test_resident_ddp_ranks_hold_their_part_and_cover_each_epoch_once(synth_shards):
    # 320 training images: 2 or 4 ranks, batches that divide each part, so nothing is dropped.
    one_process = ShardLoader(synth_shards, "train", 16, seed=2)
    everything = sorted(keys(torch.cat([b for epoch in (0, 1) for b, _ in one_process.batches(epoch)])))
    for world, batch in ((2, 16), (4, 8)):
        ranks = [ShardLoader(synth_shards, "train", batch, seed=2, rank=r, world_size=world,
                             resident=True) for r in range(world)]
        assert [len(r._resident_images) for r in ranks] == [320 // world] * world
        for epoch in (0, 1):
            seen = [keys(torch.cat([b for b, _ in r.batches(epoch)])) for r in ranks]
            union = sorted(k for part in seen for k in part)
            assert union == sorted(set(union)) == sorted(set(everything))  # each image once
        streamed = ShardLoader(synth_shards, "train", batch, seed=2, rank=world - 1,
                               world_size=world)
        for (a, la), (b, lb) in zip(streamed.batches(1), ranks[-1].batches(1)):
            assert torch.equal(a, b) and torch.equal(la, lb)
