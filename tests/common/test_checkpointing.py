"""Snapshots + resumable data order give bitwise-identical results after a kill and --resume."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from common.checkpointing import (KILL_AT_STEP_ENV, EndlessLoader, ProcessGroup, ResumableSampler, Snapshotter,
                                  latest_snapshot_folder, refuse_overwrite, resumable_loader)
from common.errors import UsageError

# A complete tiny training program: DualOptim, schedulers, dropout (RNG), shuffled loader,
# snapshots every 3 steps and at epoch ends; the kill hook SIGKILLs it at a given step.
PROGRAM = textwrap.dedent("""
    import os, sys
    import torch
    from torch import nn
    from torch.utils.data import TensorDataset
    from common.checkpointing import Snapshotter, position_loader, resumable_loader
    from dualoptim.optimizers import DualOptim
    from common.io import atomic_torch_save
    from common.seed import seed_everything

    save_dir, resume = sys.argv[1], sys.argv[2] == "1"
    seed_everything(0)
    data = TensorDataset(torch.randn(40, 5), torch.randint(0, 3, (40,)))
    model = nn.Sequential(nn.Linear(5, 8), nn.Dropout(0.3), nn.Linear(8, 3))
    opt = DualOptim(model.parameters(), forget_lr=1e-2, retain_lr=0.05)
    schedulers = [torch.optim.lr_scheduler.StepLR(o, 1, 0.5) for o in opt.optimizers]
    loader = resumable_loader(data, batch_size=8, seed=0)
    snap = Snapshotter(save_dir, every=3, resume=resume).register(
        model=model, optimizer=opt, scheduler0=schedulers[0], scheduler1=schedulers[1])
    loop = snap.restore() or {"epoch": 0, "batches_done": 0, "steps": 0}
    steps = loop["steps"]
    for epoch in range(loop["epoch"], 3):
        start = loop["batches_done"] if epoch == loop["epoch"] else 0
        position_loader(loader, epoch, start)
        for i, (x, y) in enumerate(loader, start=start):
            loss = nn.functional.cross_entropy(model(x), y)
            loss = -loss if i % 2 == 0 else loss
            loss.backward()
            (opt.forget_step if i % 2 == 0 else opt.retain_step)()
            opt.zero_grad()
            steps += 1
            snap.step(steps, epoch=epoch, batches_done=i + 1, steps=steps)
        for s in schedulers:
            s.step()
        snap.save(epoch=epoch + 1, batches_done=0, steps=steps)
    atomic_torch_save(model.state_dict(), os.path.join(save_dir, "final.pt"))
    snap.remove()
""")


def run(tmp_path, save_dir, resume, kill_at=None):
    script = tmp_path / "train.py"
    script.write_text(PROGRAM)
    env = {k: v for k, v in os.environ.items() if k != KILL_AT_STEP_ENV}
    if kill_at is not None:
        env[KILL_AT_STEP_ENV] = str(kill_at)
    return subprocess.run([sys.executable, str(script), str(save_dir), str(int(resume))],
                          capture_output=True, text=True, env=env)


def test_sigkill_mid_epoch_then_resume_is_bitwise_identical(tmp_path):
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    assert run(tmp_path, straight, resume=False).returncode == 0
    killed = run(tmp_path, interrupted, resume=False, kill_at=8)  # epoch 1, batch 3 of 5; last snapshot: step 6
    assert killed.returncode == -9 and not (interrupted / "final.pt").exists()
    assert (interrupted / "resume_state.pt").exists()
    resumed = run(tmp_path, interrupted, resume=True)
    assert resumed.returncode == 0 and "resuming from" in resumed.stdout
    a, b = torch.load(straight / "final.pt"), torch.load(interrupted / "final.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not (interrupted / "resume_state.pt").exists()  # a finished run removes its snapshot


def test_resumable_sampler_order_depends_on_seed_and_epoch_and_starts_midway():
    sampler = ResumableSampler(10, seed=4)
    first = list(sampler)
    assert sorted(first) == list(range(10)) and list(sampler) != first  # every pass moves on an epoch
    sampler.set_epoch(0)
    assert list(sampler) == first
    sampler.set_epoch(0)
    sampler.set_start(6)
    assert len(sampler) == 4 and list(sampler) == first[6:]
    assert len(sampler) == 10  # the start applies to one pass only
    assert list(ResumableSampler(10, seed=5)) != first and list(ResumableSampler(10, seed=4)) == first


def test_endless_loader_continues_mid_pass_from_its_state():
    data = TensorDataset(torch.arange(10))
    straight = EndlessLoader(resumable_loader(data, batch_size=4, seed=1))
    batches = [next(straight)[0].tolist() for _ in range(7)]  # 3 batches per pass (4, 4, 2)
    assert [len(b) for b in batches] == [4, 4, 2, 4, 4, 2, 4]
    assert sorted(sum(batches[:3], [])) == list(range(10)) and batches[:3] != batches[3:6]
    resumed = EndlessLoader(resumable_loader(data, batch_size=4, seed=1))
    resumed.load_state_dict({"batches_done": 4})
    assert [next(resumed)[0].tolist() for _ in range(3)] == batches[4:7]
    assert resumed.state_dict() == {"batches_done": 7}
    plain = EndlessLoader(DataLoader(data, batch_size=4, shuffle=True))
    assert len(next(plain)[0]) == 4  # any loader streams, but only a resumable one can start mid-pass
    with pytest.raises(ValueError, match="ResumableSampler"):
        plain.load_state_dict({"batches_done": 1})


def test_snapshot_restores_objects_generators_rng_and_loop_values(tmp_path):
    model, generator = torch.nn.Linear(2, 2), torch.Generator().manual_seed(5)
    Snapshotter(tmp_path, config={"lr": 0.1, "device": "cpu"}).register(model=model, generator=generator).save(
        epoch=2, history=[1.5])
    expected_draw = torch.rand(3, generator=generator)
    expected_global = torch.rand(3)
    other_model, other_generator = torch.nn.Linear(2, 2), torch.Generator().manual_seed(9)
    restorer = Snapshotter(tmp_path, resume=True, config={"lr": 0.1, "device": "cuda"})  # device is neutral
    loop = restorer.register(model=other_model, generator=other_generator).restore()
    assert loop == {"epoch": 2, "history": [1.5]}
    assert torch.equal(other_model.weight, model.weight)
    assert torch.equal(torch.rand(3, generator=other_generator), expected_draw)
    assert torch.equal(torch.rand(3), expected_global)
    assert Snapshotter(tmp_path, resume=False).register(model=other_model).restore() is None
    assert Snapshotter(None, every=1).restore() is None  # no folder: snapshots off


def test_step_saves_every_n_steps_but_not_after_the_last(tmp_path):
    snapshots = Snapshotter(tmp_path, every=2, resume=True)
    for steps_done in (1, 2, 3):
        snapshots.step(steps_done, 4, step=steps_done)
    snapshots.step(4, 4, step=4)  # the loop's last step: its outputs follow, no snapshot of it
    assert snapshots.restore() == {"step": 2}
    snapshots.step(6, step=6)     # without a total every multiple saves
    assert snapshots.restore() == {"step": 6}


def test_snapshot_errors_are_one_line_and_name_the_file(tmp_path):
    model = torch.nn.Linear(2, 2)
    Snapshotter(tmp_path, config={"lr": 0.1}).register(model=model).save(step=1)
    path = tmp_path / "resume_state.pt"
    with pytest.raises(UsageError, match="snapshot lacks optimizer"):
        Snapshotter(tmp_path).register(model=model, optimizer=torch.optim.SGD(model.parameters(), 0.1)).load()
    with pytest.raises(UsageError, match="model state does not match"):
        Snapshotter(tmp_path).register(model=torch.nn.Linear(3, 2)).load()
    with pytest.raises(UsageError, match=r"other settings \(lr: 0.1 -> 0.2\)"):
        Snapshotter(tmp_path, config={"lr": 0.2}).register(model=model).load()
    two = ProcessGroup(rank=0, world=2, gather=lambda obj: [obj, obj])
    with pytest.raises(UsageError, match="written by 1 process"):
        Snapshotter(tmp_path, processes=two).register(model=model).load()
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(UsageError) as info:
        Snapshotter(tmp_path, resume=True).register(model=model).restore()
    message = str(info.value)
    assert message.startswith(f"--resume {path}: cannot be read") and "truncated" in message and "\n" not in message


def test_only_rank_zero_writes_and_each_rank_gets_its_own_rng(tmp_path):
    states = []

    def gather(state):  # rank 1's RNG state differs from rank 0's
        states.append(state)
        torch.manual_seed(11)
        other = dict(state, torch=torch.get_rng_state())
        return [state, other]

    torch.manual_seed(3)
    Snapshotter(tmp_path / "rank1", processes=ProcessGroup(1, 2, gather)).save(step=1)
    assert not (tmp_path / "rank1").exists()
    torch.manual_seed(3)
    Snapshotter(tmp_path, processes=ProcessGroup(0, 2, gather)).save(step=1)
    torch.manual_seed(11)
    rank1_draw = torch.rand(2)
    Snapshotter(tmp_path, resume=True, processes=ProcessGroup(1, 2, gather)).restore()
    assert torch.equal(torch.rand(2), rank1_draw)


def test_latest_snapshot_folder_and_refuse_overwrite(tmp_path):
    old, new, done = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for folder in (old, new, done):
        folder.mkdir()
    Snapshotter(new).save(step=2)
    Snapshotter(old).save(step=1)
    os.utime(old / "resume_state.pt", ns=(1, 1))
    assert latest_snapshot_folder([old, new, done]) == new
    assert latest_snapshot_folder([done]) is None
    (tmp_path / "eval_result.json").write_text("{}")
    with pytest.raises(UsageError, match="already holds finished results .*eval_result.json.*--overwrite"):
        refuse_overwrite(tmp_path, ["eval_result.json"], overwrite=False)
    refuse_overwrite(tmp_path, ["eval_result.json"], overwrite=True)
