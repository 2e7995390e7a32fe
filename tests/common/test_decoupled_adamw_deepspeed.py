"""DecoupledAdamW as DeepSpeed's client optimizer (ZeRO-2 and ZeRO-3), two CPU processes over gloo.

accelerate runs DeepSpeed on GPUs only, so this drives ``deepspeed.initialize`` directly, the way
accelerate's DeepSpeed wrapper drives the engine in ``LLM.trainer.run_schedule``: the objective is set
through the engine's optimizer, DeepSpeed's ``gradient_accumulation_steps`` is the schedule's, and the
boundary is either set on every micro-batch (accelerate >= 1.9) or left to DeepSpeed's own count with
``engine.step()`` after every micro-batch (older accelerate).  Both must equal one process running
DecoupledAdamW on the whole batch.  Run as a script, this file is the worker.
"""
import os
import socket
import subprocess
import sys

import pytest
import torch
from torch import nn

from dualoptim.optimizers import DecoupledAdamW, set_objective

STEPS, ACCUMULATION, WORLD = 9, 2, 2
ROWS = ACCUMULATION * WORLD  # one row per micro-batch


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))


def data():
    generator = torch.Generator().manual_seed(1)
    return [(torch.randn(ROWS, 8, generator=generator), torch.randn(ROWS, 1, generator=generator))
            for _ in range(STEPS)]


def objective(step):
    return "forget" if step % 3 == 0 else "retain"


def loss_of(model, x, y, step):
    loss = nn.functional.mse_loss(model(x), y)
    return -loss if objective(step) == "forget" else loss


def make_optimizer(model):
    return DecoupledAdamW(model.parameters(), lr=1e-2, weight_decay=0.01, forget_lr_ratio=2.0)


def worker(out_path):
    import deepspeed
    from deepspeed.runtime.zero import GatheredParameters

    rank, results = int(os.environ["RANK"]), {}
    for stage in (2, 3):
        for explicit_boundary in (True, False):
            model = make_model()
            config = {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": ACCUMULATION,
                      "zero_optimization": {"stage": stage}, "gradient_clipping": 0.0,
                      "zero_allow_untested_optimizer": True}
            engine, optimizer, _, _ = deepspeed.initialize(model=model, optimizer=make_optimizer(model),
                                                           config=config)
            for step, (x, y) in enumerate(data()):
                set_objective(optimizer, objective(step))
                for micro in range(ACCUMULATION):
                    row = micro * WORLD + rank  # global micro-batch g goes to process g % world
                    if explicit_boundary:
                        engine.set_gradient_accumulation_boundary(is_boundary=micro == ACCUMULATION - 1)
                    engine.backward(loss_of(engine, x[row:row + 1], y[row:row + 1], step))
                    if not explicit_boundary or micro == ACCUMULATION - 1:
                        engine.step()
            with GatheredParameters(list(engine.module.parameters()), enabled=stage == 3):
                results[(stage, explicit_boundary)] = [p.detach().clone() for p in engine.module.parameters()]
            client_state = {key for state in optimizer.optimizer.state.values() for key in state}
            results[(stage, "state keys")] = sorted(client_state)
    if rank == 0:
        torch.save(results, out_path)


@pytest.mark.slow
def test_zero2_and_zero3_on_two_processes_equal_one_process(tmp_path):
    pytest.importorskip("deepspeed")
    out = tmp_path / "deepspeed.pt"
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(WORLD),
                             "--master_port", str(free_port()), __file__, str(out)], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    results = torch.load(out)

    model = make_model()
    optimizer = make_optimizer(model)
    for step, (x, y) in enumerate(data()):
        optimizer.set_objective(objective(step))
        loss_of(model, x, y, step).backward()
        optimizer.step()
        optimizer.zero_grad()
    for stage in (2, 3):
        assert results[(stage, "state keys")] == ["exp_avg_forget", "exp_avg_retain", "exp_avg_sq_forget",
                                                  "exp_avg_sq_retain", "step_forget", "step_retain"]
        for explicit_boundary in (True, False):
            for expected, got in zip(model.parameters(), results[(stage, explicit_boundary)]):
                torch.testing.assert_close(got, expected.detach(), atol=1e-6, rtol=1e-5)


if __name__ == "__main__":
    worker(sys.argv[1])
