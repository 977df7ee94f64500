"""runyard.data: ImageNet-scale supervised data, prepared once and streamed fast.

- synth: a small JPEG tree in the ImageNet layout (tests, laptop demos)
- imagenet / npz: `runyard data prepare` for the folder tree and the downsampled-ImageNet npz
  release, into Parquet shards of raw uint8 images + a manifest (shards.py: the format)
- inspect: counts, class balance, a PNG grid of sample images
- loader: ShardLoader, the seeded, DDP-sharded, shuffle-buffered batch iterator
- stored: a prepared dataset kept in storage (a URI), checked there and copied to each
  node's local disk once, verified against the manifest's checksums

A leaf package: it imports numpy, pyarrow, PIL and torch, and from runyard only runyard.errors
and runyard.fsio (files through pyarrow's filesystem layer).
"""

from runyard.data.loader import Normalizer, ShardLoader, plan_epoch
from runyard.data.shards import load_manifest, read_shard
from runyard.data.stored import check_dataset, check_stored, dataset_dir

__all__ = ["Normalizer", "ShardLoader", "check_dataset", "check_stored", "dataset_dir",
           "load_manifest", "plan_epoch", "read_shard"]
