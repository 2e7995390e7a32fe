"""Does ``torch.compile`` pay for an image-classification training step? Eager against compiled, same batches.

    OMP_NUM_THREADS=2 python benchmarks/ic_compile.py --json benchmarks/results/ic_compile_cpu.json

For every ``--archs`` x precision (float32; bfloat16 autocast + channels-last): a fresh model and SGD take
``--steps`` training steps (cross-entropy, the pipeline's device-path batches of ``--batch_size`` random
CIFAR-sized images with crop + flip) eagerly, and a copy of the same model ``torch.compile``-d (inductor,
default mode) takes the same steps, step by step in turn (on a shared machine both see the same load).
Reported: the compiled first step (compilation included), the median
step time of each after ``--warmup`` steps, and whether the compiled run's losses and final weights match
the eager run's (float32: within 1e-4 relative; bf16: 1e-2).
"""
from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")

import argparse  # noqa: E402
import copy  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from common.datasets import ArrayImageDataset  # noqa: E402
from common.device import get_device  # noqa: E402
from common.io import atomic_write_json  # noqa: E402
from ImageClassification.arg_parser import parse_config  # noqa: E402
from ImageClassification.data import UnlearnData, make_loader  # noqa: E402
from ImageClassification.device_data import BatchAugment  # noqa: E402
from ImageClassification.models import build_model_from_config  # noqa: E402

PRECISIONS = {"float32": [], "bf16+channels_last": ["--amp", "--channels_last"]}


class Trainer:
    """SGD steps of one model; records each step's seconds and loss."""

    def __init__(self, model, config, device) -> None:
        self.model, self.config, self.device = model, config, device
        self.optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        self.seconds, self.losses = [], []

    def step(self, images, targets) -> None:
        self.model.train()
        start = time.perf_counter()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.amp):
            loss = F.cross_entropy(self.model(images), targets)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.seconds.append(time.perf_counter() - start)
        self.losses.append(loss.item())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=["resnet20s"])
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    device = get_device(args.device, None)
    rng = np.random.RandomState(0)
    count = args.batch_size * args.steps
    images = ArrayImageDataset(rng.randint(0, 256, (count, 32, 32, 3), dtype=np.uint8), np.arange(count) % 10)
    print(f"{device}, torch {torch.__version__}, {torch.get_num_threads()} threads, load average "
          f"{os.getloadavg()[0]:.1f}\n\n| arch | precision | compiled first step (s) | eager step (s) | "
          f"compiled step (s) | compiled / eager | same losses and weights |\n|---|---|---:|---:|---:|---:|---|")
    rows = []
    for arch in args.archs:
        for precision, flags in PRECISIONS.items():
            config = parse_config(["--dataset", "cifar10", "--arch", arch, "--batch_size", str(args.batch_size)]
                                  + flags)
            data = UnlearnData(train=images, forget_index=np.array([0]), val=images, test=images, num_classes=10,
                               eval_transform=None)
            data.place_on_device(device, BatchAugment(4, True))
            batches = list(make_loader(data.split("train"), config, shuffle=True))
            torch.manual_seed(0)
            eager = build_model_from_config(config).to(device)
            compiled = copy.deepcopy(eager)
            runs = Trainer(eager, config, device), Trainer(torch.compile(compiled), config, device)
            for i, batch in enumerate(batches):  # interleaved, alternating who goes first: shared load hits both
                for run in (runs if i % 2 == 0 else runs[::-1]):
                    run.step(*batch)
            (eager_seconds, eager_losses), (compiled_seconds, compiled_losses) = ((r.seconds, r.losses) for r in runs)
            tolerance = 1e-2 if config.amp else 1e-4
            same = (np.allclose(eager_losses, compiled_losses, rtol=tolerance) and all(
                torch.allclose(a, b, rtol=tolerance, atol=tolerance)
                for a, b in zip(eager.state_dict().values(), compiled.state_dict().values())))
            eager_step = statistics.median(eager_seconds[args.warmup:])
            compiled_step = statistics.median(compiled_seconds[args.warmup:])
            rows.append({"arch": arch, "precision": precision, "compiled_first_step_s": compiled_seconds[0],
                         "eager_step_s": eager_step, "compiled_step_s": compiled_step, "same": bool(same),
                         "eager_seconds": eager_seconds, "compiled_seconds": compiled_seconds,
                         "eager_losses": eager_losses, "compiled_losses": compiled_losses})
            print(f"| {arch} | {precision} | {compiled_seconds[0]:.1f} | {eager_step:.2f} | {compiled_step:.2f} | "
                  f"{compiled_step / eager_step:.2f} | {'yes' if same else 'no'} |", flush=True)
    if args.json:
        atomic_write_json({"config": vars(args), "device": str(device), "torch": torch.__version__,
                           "load_average_end": os.getloadavg()[0], "rows": rows}, args.json)


if __name__ == "__main__":
    main()
