"""Worker processes start once per pass (common.progress), and a pass takes the random draws a plain
``for batch in loader`` takes -- as the original's loops, which iterate their loaders directly."""
from __future__ import annotations

import functools
import multiprocessing

import torch
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm as auto_tqdm

from common.checkpointing import resumable_loader
from common.progress import progress


def count_start(counter, worker_id: int) -> None:
    with counter.get_lock():
        counter.value += 1


def two_worker_loader(counter) -> DataLoader:
    data = TensorDataset(torch.arange(8.0))
    return DataLoader(data, batch_size=2, num_workers=2, worker_init_fn=functools.partial(count_start, counter))


def worker_starts(wrap) -> int:
    counter = multiprocessing.get_context("fork").Value("i", 0)
    loader = two_worker_loader(counter)
    for _ in range(2):
        assert [float(x) for (batch,) in wrap(loader) for x in batch] == [float(i) for i in range(8)]
    return counter.value


def test_two_workers_start_twice_per_pass_not_four_times():
    assert worker_starts(progress) == 4                                  # 2 passes x 2 workers
    assert worker_starts(lambda loader: loader) == 4                     # a plain loop, the original's
    assert worker_starts(lambda loader: auto_tqdm(loader)) == 8          # what tqdm.auto did: two iterators


def test_a_pass_takes_the_draws_of_a_plain_loop():
    """An unshuffled loader without a generator draws its base seed from the global RNG: one draw per pass."""
    loader = DataLoader(TensorDataset(torch.arange(6.0)), batch_size=3)
    torch.manual_seed(0)
    list(loader)
    plain = torch.rand(3)
    torch.manual_seed(0)
    list(progress(loader))
    assert torch.equal(torch.rand(3), plain)
    torch.manual_seed(0)
    list(auto_tqdm(loader))
    assert not torch.equal(torch.rand(3), plain)                         # one extra draw before the first batch


def test_a_positioned_resumable_pass_keeps_its_epoch_under_workers():
    """With workers, the discarded first iterator of tqdm.auto prefetched the sampler and so consumed the
    epoch set by ``position_loader``: the pass ran the next epoch's order. Now it runs its own."""
    loader = resumable_loader(TensorDataset(torch.arange(8)), 2, seed=3, num_workers=2)
    reference = resumable_loader(TensorDataset(torch.arange(8)), 2, seed=3)
    loader.sampler.set_epoch(5)
    reference.sampler.set_epoch(5)
    expected = [int(x) for (batch,) in reference for x in batch]
    assert [int(x) for (batch,) in progress(loader) for x in batch] == expected
    loader.sampler.set_epoch(5)
    assert [int(x) for (batch,) in auto_tqdm(loader) for x in batch] != expected   # epoch 6's order
