"""Data loading that resumes exactly: where a run stopped in the epoch, and which random augmentation each image got.

Plain DataLoaders cannot resume mid-epoch: the shuffle order comes from a generator whose state is not saved, and
augmentation draws from the shared random stream of whichever worker process decodes an image. Here

* :class:`ResumableSampler` derives the order from ``(seed, epoch)`` alone (shuffled, or class-balanced with
  replacement), splits it across DDP ranks by striding (so rank ``r`` of ``n`` sees every ``n``-th image of the one
  global order: the global batch is the same on 1 or ``n`` processes), and can start part-way into an epoch;
* :class:`SeededDataset` runs each item's transform under its own seed, a function of ``(seed, epoch, index)``, so an
  image gets the same augmentation whatever the worker count, the process count or a resume;
* :class:`ResumableDataLoader` implements Lightning's ``state_dict``/``load_state_dict`` interface, so the position
  in the epoch goes into every checkpoint and comes back on resume.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

__all__ = ["ResumableDataLoader", "ResumableSampler", "SeededDataset", "item_seed"]

_MASK = (1 << 63) - 1


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A well-mixed 63-bit seed for one item of one epoch (splitmix64 over the three numbers)."""
    value = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + index * 0x94D049BB133111EB) & ((1 << 64) - 1)
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & ((1 << 64) - 1)
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & ((1 << 64) - 1)
    return (value ^ (value >> 31)) & _MASK


class ResumableSampler(DistributedSampler):
    """Yields ``(epoch, index)`` keys in an order that is a pure function of ``(seed, epoch)``.

    A :class:`~torch.utils.data.DistributedSampler` subclass, so Lightning uses it under DDP as it is (calling
    :meth:`set_epoch`) instead of wrapping it. With ``weights`` it draws ``len(weights)`` indices with replacement in
    proportion to the weights (a class-balanced epoch) instead of shuffling.

    Args:
        num_items: size of the dataset.
        num_replicas, rank: the DDP world size and this process's rank (default: single process).
        shuffle: shuffle each epoch (else the natural order).
        seed: the seed of every epoch's order.
        weights: per-item sampling weights for a balanced epoch (drawn with replacement).
    """

    def __init__(
        self,
        num_items: int,
        *,
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
        seed: int = 0,
        weights: Sequence[float] | torch.Tensor | None = None,
    ) -> None:
        if num_items < 1:
            raise ValueError(f"Expected `num_items` >= 1, but got {num_items}.")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"Expected 0 <= rank < num_replicas, but got rank={rank}, num_replicas={num_replicas}.")
        # DistributedSampler's constructor needs a dataset only for its length
        super().__init__(range(num_items), num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)  # type: ignore[arg-type]
        self.num_items = num_items
        self.weights = torch.as_tensor(weights, dtype=torch.double) if weights is not None else None
        if self.weights is not None:
            if len(self.weights) != num_items:
                raise ValueError(f"Expected {num_items} `weights` (one per item), but got {len(self.weights)}.")
            if bool((self.weights < 0).any()) or not bool((self.weights > 0).any()):
                raise ValueError("Expected non-negative `weights` with at least one above 0.")
        self.num_samples = math.ceil(num_items / num_replicas)
        self.total_size = self.num_samples * num_replicas
        self._skip = 0  # items of this rank to leave out at the start of the next iteration (a resume)

    def global_order(self, epoch: int) -> list[int]:
        """The order of every item of ``epoch`` before it is split across ranks."""
        generator = torch.Generator().manual_seed(item_seed(self.seed, epoch, -1))
        if self.weights is not None:
            order = torch.multinomial(self.weights, self.num_items, replacement=True, generator=generator).tolist()
        elif self.shuffle:
            order = torch.randperm(self.num_items, generator=generator).tolist()
        else:
            order = list(range(self.num_items))
        repeats = math.ceil(self.total_size / len(order))  # pad so every rank gets as many items (DistributedSampler)
        return (order * repeats)[: self.total_size]

    def skip(self, count: int) -> None:
        """Leave out this rank's first ``count`` items in the next iteration (once)."""
        self._skip = max(0, count)

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        epoch, start = self.epoch, self._skip
        self._skip = 0
        mine = self.global_order(epoch)[self.rank : self.total_size : self.num_replicas]
        return iter([(epoch, index) for index in mine[start:]])

    def __len__(self) -> int:
        return self.num_samples


class SeededDataset(Dataset):
    """Wraps a map-style dataset: ``dataset[(epoch, index)]`` is ``base[index]`` under the seed of that item.

    The seed covers torch's global generator (what torchvision's transforms draw from), Python's ``random`` and
    NumPy's global generator; the caller's generator states are restored afterwards, so training randomness
    (dropout, say) in the main process is untouched when there are no worker processes.
    """

    def __init__(self, dataset: Any, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str) -> Any:  # targets, classes, samples ... of the wrapped dataset
        if name in ("dataset", "seed"):
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, key: tuple[int, int] | int) -> Any:
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: Sequence[tuple[int, int] | int]) -> list[Any]:
        """The items of a batch, each under its own seed (the DataLoader fetches a batch through this).

        The caller's generator states are saved and restored once per batch: NumPy's alone costs ~45 us, as much as
        decoding a 28 px PNG, where seeding an item costs ~5 us.
        """
        import random

        import numpy as np
        from torch.utils.data import get_worker_info

        in_worker = get_worker_info() is not None  # a worker's generators serve this dataset alone: no restore
        python_state = None if in_worker else random.getstate()
        numpy_state = None if in_worker else np.random.get_state()
        items = []
        prefetch = getattr(self.dataset, "prefetch", None)
        if prefetch is not None:  # images on URLs: the batch's reads start together, seeds apply per item below
            prefetch([key[1] if isinstance(key, tuple) else key for key in keys])
        with torch.random.fork_rng(devices=[]):
            try:
                for key in keys:
                    epoch, index = key if isinstance(key, tuple) else (0, key)
                    seed = item_seed(self.seed, epoch, index)
                    torch.default_generator.manual_seed(seed)  # the CPU generator alone: ~1 us, torch.manual_seed ~60
                    random.seed(seed)
                    np.random.seed(seed % (1 << 32))
                    items.append(self.dataset[index])
            finally:
                if python_state is not None:
                    random.setstate(python_state)
                if numpy_state is not None:
                    np.random.set_state(numpy_state)
        return items


class _LazyIterator:
    def __init__(self, loader: ResumableDataLoader) -> None:
        self._loader = loader
        self._iterator: Any = None

    def __iter__(self) -> _LazyIterator:
        return self

    def __next__(self) -> Any:
        if self._iterator is None:
            self._iterator = self._loader._begin()
        return next(self._iterator)

    def __len__(self) -> int:
        return len(self._loader)


class ResumableDataLoader(DataLoader):
    """A DataLoader over a :class:`ResumableSampler` whose position in the epoch is saved in checkpoints.

    Lightning calls :meth:`state_dict` when it writes a checkpoint and :meth:`load_state_dict` before it iterates
    again on resume. The position counts the batches the training loop has *taken* (:meth:`mark_batch`, called by
    the data module for every training batch), not the ones worker processes or the prefetcher read ahead.
    """

    def __init__(self, dataset: Any, *, sampler: ResumableSampler, **kwargs: Any) -> None:
        super().__init__(dataset, sampler=sampler, **kwargs)
        self.resumable_sampler = sampler
        self._taken = 0
        self._taken_epoch = sampler.epoch  # the epoch the count belongs to (set_epoch runs before the first batch)
        self._resume: tuple[int, int] | None = None
        self._epoch_end: int | float = float("inf")

    @property
    def batches_taken(self) -> int:
        """Training batches taken so far in this epoch."""
        return self._taken

    def mark_batch(self, batches_per_epoch: int | float | None = None) -> None:
        """Count one batch as taken by the training loop.

        ``batches_per_epoch`` is where the Trainer ends the epoch (``trainer.num_training_batches``, fewer than
        ``len(self)`` with ``limit_train_batches``): a position there means the next epoch starts afresh.
        """
        self._taken += 1
        if batches_per_epoch is not None:
            self._epoch_end = batches_per_epoch

    def __iter__(self) -> Any:
        # The real iterator (and its worker processes, which read the sampler ahead) starts at the first batch:
        # Lightning may call iter() before it restores a checkpoint, and the order must follow the restored state.
        return _LazyIterator(self)

    def _begin(self) -> Any:
        sampler = self.resumable_sampler
        if self._resume is not None:
            epoch, taken = self._resume
            self._resume = None
            sampler.set_epoch(epoch)
            sampler.skip(taken * (self.batch_size or 1))
            self._taken = taken
        else:
            self._taken = 0
        self._taken_epoch = sampler.epoch
        return DataLoader.__iter__(self)

    def state_dict(self) -> dict[str, int]:
        if self._taken >= min(len(self), self._epoch_end):  # complete: resume at the start of the next epoch
            return {"epoch": self._taken_epoch + 1, "batches": 0}
        return {"epoch": self._taken_epoch, "batches": self._taken}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        epoch, taken = int(state_dict["epoch"]), int(state_dict["batches"])
        if taken >= len(self):  # the epoch was complete: the next one starts from its beginning
            epoch, taken = epoch + 1, 0
        self._resume = (epoch, taken)
