"""Snapshots + ResumableSampler give bitwise-identical results after a kill and --resume."""
import subprocess
import sys
import textwrap

import pytest
import torch

from common.checkpointing import ResumableSampler, Snapshotter, refuse_overwrite
from common.errors import UsageError

# A complete tiny training program: DualOptim, schedulers, dropout (RNG), shuffled loader,
# snapshots every 3 steps; KILL_AT makes it SIGKILL itself after that many steps.
PROGRAM = textwrap.dedent("""
    import os, signal, sys
    import torch
    from torch import nn
    from torch.utils.data import TensorDataset
    from common.checkpointing import Snapshotter, maybe_resume, resumable_loader
    from common.dualoptim import DualOptim
    from common.io import atomic_torch_save
    from common.seed import seed_everything

    save_dir, kill_at, resume = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
    seed_everything(0)
    data = TensorDataset(torch.randn(40, 5), torch.randint(0, 3, (40,)))
    model = nn.Sequential(nn.Linear(5, 8), nn.Dropout(0.3), nn.Linear(8, 3))
    opt = DualOptim(model.parameters(), forget_lr=1e-2, retain_lr=0.05)
    schedulers = [torch.optim.lr_scheduler.StepLR(o, 1, 0.5) for o in opt.optimizers]
    loader = resumable_loader(data, batch_size=8, seed=0)
    sampler = loader.sampler
    snap = Snapshotter(save_dir, {"model": model, "optimizer": opt,
                                  "scheduler0": schedulers[0], "scheduler1": schedulers[1]})
    loop = maybe_resume(snap, resume) or {"epoch": 0, "batches_done": 0}
    steps = 0
    for epoch in range(loop["epoch"], 3):
        sampler.set_epoch(epoch)
        start = loop["batches_done"] if epoch == loop["epoch"] else 0
        sampler.set_start(start * 8)
        for i, (x, y) in enumerate(loader, start=start):
            loss = nn.functional.cross_entropy(model(x), y)
            loss = -loss if i % 2 == 0 else loss
            loss.backward()
            (opt.forget_step if i % 2 == 0 else opt.retain_step)()
            opt.zero_grad()
            steps += 1
            if (i + 1) % 3 == 0:
                snap.save(epoch, i + 1)
            if steps == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
        for s in schedulers:
            s.step()
        snap.save(epoch + 1, 0)
    atomic_torch_save(model.state_dict(), os.path.join(save_dir, "final.pt"))
""")


def run(tmp_path, save_dir, kill_at, resume):
    script = tmp_path / "train.py"
    script.write_text(PROGRAM)
    return subprocess.run([sys.executable, str(script), str(save_dir), str(kill_at), str(int(resume))],
                          capture_output=True, text=True)


def test_sigkill_mid_epoch_then_resume_is_bitwise_identical(tmp_path):
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    assert run(tmp_path, straight, kill_at=-1, resume=False).returncode == 0
    killed = run(tmp_path, interrupted, kill_at=8, resume=False)  # epoch 1, after batch 3 of 5
    assert killed.returncode == -9 and not (interrupted / "final.pt").exists()
    assert run(tmp_path, interrupted, kill_at=-1, resume=True).returncode == 0
    a, b = torch.load(straight / "final.pt"), torch.load(interrupted / "final.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resumable_sampler_order_depends_on_seed_and_epoch_and_starts_midway():
    sampler = ResumableSampler(10, seed=4)
    sampler.set_epoch(1)
    full = list(sampler)
    assert sorted(full) == list(range(10))
    sampler.set_start(6)
    assert len(sampler) == 4 and list(sampler) == full[6:]
    assert list(sampler) == full  # start applies to one pass only
    sampler.set_epoch(2)
    assert list(sampler) != full


def test_snapshot_mismatch_and_refuse_overwrite(tmp_path):
    model = torch.nn.Linear(2, 2)
    Snapshotter(tmp_path, {"model": model}).save(epoch=0, batches_done=1)
    with pytest.raises(UsageError, match="snapshot lacks optimizer"):
        Snapshotter(tmp_path, {"model": model, "optimizer": torch.optim.SGD(model.parameters(), 0.1)}).load()
    with pytest.raises(UsageError, match="model state does not match"):
        Snapshotter(tmp_path, {"model": torch.nn.Linear(3, 2)}).load()
    (tmp_path / "eval_result.json").write_text("{}")
    with pytest.raises(UsageError, match="already holds finished results .*eval_result.json.*--overwrite"):
        refuse_overwrite(tmp_path, ["eval_result.json"], overwrite=False)
    refuse_overwrite(tmp_path, ["eval_result.json"], overwrite=True)
