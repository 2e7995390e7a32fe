"""The alternating schedule: which batches, which objective, also under accumulation and sharding."""
from __future__ import annotations

import torch

from dualoptim.optimizers import DecoupledAdamW
from LLM.schedule import BatchStream, Schedule, objective_at, steps_per_epoch
from LLM.trainer import make_accelerator, run_schedule


class Tagged(torch.utils.data.Dataset):
    def __init__(self, tag, n):
        self.tag, self.n = tag, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return (self.tag, i)


def test_objective_cycle_and_steps_per_epoch():
    assert [objective_at(s, 2, 3) for s in range(7)] == ["forget"] * 2 + ["retain"] * 3 + ["forget"] * 2
    # forget side limits: (1 + 5/1) * ceil(40 / (5*4*2)) = 6
    assert steps_per_epoch(40, 3600, 5, 4, 2, alternate=True, forget_freq=1, retain_freq=5) == 6
    # retain side limits: (1 + 2/1) * ceil(3 / 2) = 6
    assert steps_per_epoch(100, 3, 2, 1, 1, alternate=True, forget_freq=2, retain_freq=1) == 6
    assert steps_per_epoch(40, 3600, 5, 4, 1, alternate=False) == 2


def test_stream_reshuffles_and_shards():
    single = BatchStream(Tagged("f", 5), 2, list, seed=3)
    batches = [single.next_indices() for _ in range(4)]
    flat = sum(batches, [])
    assert sorted(flat[:5]) == list(range(5)) and sorted(flat[5:8]) == sorted(set(flat[5:8]))
    rank0 = BatchStream(Tagged("f", 5), 2, list, seed=3, rank=0, world_size=2)
    rank1 = BatchStream(Tagged("f", 5), 2, list, seed=3, rank=1, world_size=2)
    assert [rank0.next_indices(), rank1.next_indices(), rank0.next_indices(), rank1.next_indices()] == batches


def test_schedule_batches_share_the_step_objective_under_accumulation():
    streams = {"forget": BatchStream(Tagged("f", 4), 1, list, 0), "retain": BatchStream(Tagged("r", 9), 1, list, 0)}
    steps = list(Schedule(streams, max_steps=5, accumulation=3, forget_freq=1, retain_freq=2))
    assert [objective for _, objective, _ in steps] == ["forget", "retain", "retain", "forget", "retain"]
    for _, objective, micro in steps:
        assert len(micro) == 3 and {item[0][0] for item in micro} == {objective[0]}


def test_run_schedule_tells_optimizer_each_steps_objective():
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    optimizer = DecoupledAdamW(model.parameters(), lr=0.1, forget_lr_ratio=2.0)
    seen = []
    optimizer.register_step_pre_hook(lambda opt, args, kwargs: seen.append(opt.objective))
    calls = []
    streams = {"forget": BatchStream(Tagged("f", 4), 1, list, 0), "retain": BatchStream(Tagged("r", 4), 1, list, 0)}
    schedule = Schedule(streams, max_steps=4, accumulation=2, forget_freq=1, retain_freq=1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)

    def step_loss(objective, batch):
        calls.append((objective, optimizer.objective))
        return model(torch.ones(1, 2)).sum() * (1 if objective == "retain" else -1)

    history = run_schedule(make_accelerator("cpu"), model, optimizer, scheduler, schedule, step_loss, 0.0)
    assert seen == ["forget", "retain", "forget", "retain"]
    assert len(calls) == 8 and all(objective == state for objective, state in calls)
    assert [h["objective"] for h in history] == seen
    state = optimizer.state[model.weight]
    assert state["step_forget"].item() == 2 and state["step_retain"].item() == 2
