"""The resumable sampler, per-item seeds and the loader's position: exact, the same on any number of ranks."""

import random
from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from lightning_cv.resume.loader import ResumableDataLoader, ResumableSampler, SeededDataset, item_seed


def test_order_is_a_function_of_seed_and_epoch():
    a, b = ResumableSampler(50, seed=3), ResumableSampler(50, seed=3)
    a.set_epoch(2)
    b.set_epoch(2)
    assert list(a) == list(b) and all(epoch == 2 for epoch, _ in a)
    assert sorted(i for _, i in a) == list(range(50))  # a permutation
    b.set_epoch(3)
    assert [i for _, i in a] != [i for _, i in b]
    assert [i for _, i in ResumableSampler(50, seed=4)] != [i for _, i in ResumableSampler(50, seed=3)]
    assert [i for _, i in ResumableSampler(5, shuffle=False)] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("weights", [None, [1.0] * 30 + [9.0] * 7])
def test_ranks_split_the_one_global_order_by_striding(weights):
    single = ResumableSampler(37, seed=1, weights=weights)
    ranks = [ResumableSampler(37, num_replicas=3, rank=r, seed=1, weights=weights) for r in range(3)]
    for sampler in (single, *ranks):
        sampler.set_epoch(5)
    shares = [[i for _, i in r] for r in ranks]
    assert [len(s) for s in shares] == [13, 13, 13] and all(len(r) == 13 for r in ranks)
    interleaved = [share[k] for k in range(13) for share in shares]
    global_order = [i for _, i in single]
    assert interleaved[:37] == global_order  # rank r takes items r, r+3, ...: the global batch is the same
    assert interleaved[37:] == global_order[:2]  # padded like DistributedSampler


def test_balanced_draw_under_ddp_evens_out_the_classes():
    labels = [0] * 90 + [1] * 10
    weights = [1 / 90] * 90 + [1 / 10] * 10
    counts: Counter = Counter()
    for epoch in range(30):
        for rank in range(2):
            sampler = ResumableSampler(100, num_replicas=2, rank=rank, seed=0, weights=weights)
            sampler.set_epoch(epoch)
            counts.update(labels[i] for _, i in sampler)
    assert 0.45 < counts[1] / sum(counts.values()) < 0.55  # the rare class is drawn half the time, not 10%


def test_skip_resumes_part_way_once():
    sampler = ResumableSampler(20, seed=0)
    full = list(sampler)
    sampler.skip(7)
    assert list(sampler) == full[7:]
    assert list(sampler) == full  # the skip applies to one iteration only


def test_bad_arguments():
    with pytest.raises(ValueError, match="Expected `num_items` >= 1"):
        ResumableSampler(0)
    with pytest.raises(ValueError, match="Expected 0 <= rank < num_replicas"):
        ResumableSampler(5, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="non-negative `weights` with at least one above 0"):
        ResumableSampler(5, weights=[1.0, -1.0, 1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="non-negative `weights` with at least one above 0"):
        ResumableSampler(2, weights=[0.0, 0.0])
    with pytest.raises(ValueError, match="Expected 5 `weights` \\(one per item\\), but got 2"):
        ResumableSampler(5, weights=[1.0, 1.0])


def test_fewer_items_than_ranks_still_gives_every_rank_its_share():
    shares = [list(ResumableSampler(1, num_replicas=4, rank=r)) for r in range(4)]
    assert [len(s) for s in shares] == [1, 1, 1, 1]  # no rank waits for a batch that never comes


class RandomItems(Dataset):
    """Each item draws from torch, Python and NumPy global generators, as augmentations do."""

    def __len__(self):
        return 8

    def __getitem__(self, index):
        return index, torch.rand(1).item(), random.random(), float(np.random.rand())


def test_items_draw_from_their_own_seed_and_leave_the_callers_generators_alone():
    data = SeededDataset(RandomItems(), seed=11)
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    before = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
    first = data[(1, 3)]
    assert data[(1, 3)] == first  # the same item of the same epoch draws the same
    assert data[(2, 3)] != first and data[(1, 4)][1:] != first[1:]
    assert torch.equal(torch.get_rng_state(), before[0]) and random.getstate() == before[1]
    assert np.array_equal(np.random.get_state()[1], before[2])
    assert item_seed(11, 1, 3) != item_seed(11, 3, 1)  # positions are not interchangeable


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_position_round_trips_and_worker_count_does_not_matter(workers):
    def loader():
        sampler = ResumableSampler(8, seed=2)
        return ResumableDataLoader(SeededDataset(RandomItems(), 5), sampler=sampler, batch_size=2, num_workers=workers)

    reference = [batch for batch in ResumableDataLoader(SeededDataset(RandomItems(), 5),
                                                        sampler=ResumableSampler(8, seed=2), batch_size=2)]  # fmt: skip
    first = loader()
    taken = []
    for batch in first:
        taken.append(batch)
        first.mark_batch()
        if len(taken) == 2:
            break
    state = first.state_dict()
    assert state == {"epoch": 0, "batches": 2}
    resumed = loader()
    resumed.load_state_dict(state)
    rest = list(resumed)
    for a, b in zip(taken + rest, reference, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_a_complete_epoch_resumes_at_the_next_one():
    loader = ResumableDataLoader(SeededDataset(RandomItems(), 5), sampler=ResumableSampler(8, seed=2), batch_size=4)
    loader.load_state_dict({"epoch": 3, "batches": 2})
    next(iter(loader))
    assert loader.resumable_sampler.epoch == 4 and loader.batches_taken == 0


def test_a_batch_fetched_at_once_equals_its_items_fetched_one_by_one():
    # the DataLoader fetches through __getitems__: one save and restore of the caller's generators per batch
    data = SeededDataset(RandomItems(), seed=11)
    keys = [(1, 3), (1, 7), (2, 3)]
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    before = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
    batch = data.__getitems__(keys)
    assert batch == [data[key] for key in keys]
    assert len({item[1] for item in batch}) == 3  # every item under its own seed, not one seed per batch
    assert torch.equal(torch.get_rng_state(), before[0]) and random.getstate() == before[1]
    assert np.array_equal(np.random.get_state()[1], before[2])
    loader = ResumableDataLoader(data, sampler=ResumableSampler(8, seed=1), batch_size=3)
    fetched = [item for b in loader for item in zip(*b, strict=True)]
    order = ResumableSampler(8, seed=1).global_order(0)
    assert [int(f[0]) for f in fetched] == order
    assert [round(float(f[1]), 6) for f in fetched] == [round(data[(0, i)][1], 6) for i in order]
