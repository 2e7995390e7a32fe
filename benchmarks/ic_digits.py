"""Image-classification benchmark 1 at small scale: random 10% forgetting on digits, on CPU.

    OMP_NUM_THREADS=2 python benchmarks/ic_digits.py [--out runs/ic_digits] [--search_seeds 1 2] [--seeds 1 2 3 4 5]

scikit-learn's digits (1,437 training images, 10% held out for validation, 360 test images;
no download), ResNet-20s at 16x16. One original model is trained once; then

1. Retrain (the reference) on every seed;
2. the learning-rate search: FT, GA, RL, SalUn, SFR-on and SCRUB with ``--optim sgd``, ``adam`` and
   ``dual``, each at 3 values of ``--unlearn_lr`` (SGD around 1e-2, Adam around 1e-4), on
   ``--search_seeds``; ``retain_lr`` fixed at 0.01 (sgd, dual) or 1e-4 (adam) as in the paper;
3. every (method, optimizer) at its lowest-average-gap learning rate on all ``--seeds``.

Prints the parse_result table of the best settings (UA, RA, TA, MIA mean +- std over seeds, average
gap to Retrain, average std), the search table, and unlearning throughput (images forwarded through
the model per second of unlearning, CPU), and draws the average-gap-vs-lr curves into
``<out>/avg_gap_vs_lr.png``.  Each run calls the entry script's ``main(argv)`` in-process with its
printed log in ``<run folder>/log.txt``; the folders follow scripts/ImageClassification
(``<out>/<method>_<optim>_lr<lr>/seed<k>``), so ``parse_result.py --log_paths <out>`` works on them.

Research-code behaviour the grid has to respect (see ImageClassification/unlearn/*.py):
* FT and GA are single-objective; under ``dual`` they step the retain-side SGD at ``--retain_lr``,
  so ``--unlearn_lr`` has no effect there and dual is run at one grid point only.
* SFR-on with ``sgd``/``adam`` runs one optimizer at ``--retain_lr`` for both objectives; the search
  therefore sets ``--retain_lr`` to the swept value for those two (dual keeps retain_lr fixed).
"""
from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Dict, List, Tuple  # noqa: E402

import torch  # noqa: E402

from ImageClassification import (generate_mask, main_forget, main_random, main_random_sfron,  # noqa: E402
                                 main_train, parse_result, pipeline)

METHODS = ("FT", "GA", "RL", "SalUn", "SFRon", "SCRUB")
OPTIMS = ("sgd", "adam", "dual")
GRID = {"sgd": (5e-3, 1e-2, 2e-2), "adam": (5e-5, 1e-4, 2e-4), "dual": (5e-5, 1e-4, 2e-4)}
RETAIN_LR = {"sgd": 0.01, "adam": 1e-4, "dual": 0.01}
ENTRY = {"FT": main_forget, "GA": main_forget, "RL": main_random, "SalUn": main_random,
         "SFRon": main_random_sfron, "SCRUB": main_forget}
UNLEARN = {"FT": "FT", "GA": "GA", "RL": "RL", "SalUn": "RL", "SFRon": "SFRon", "SCRUB": "SCRUB"}

# (method, optim) -> list of (images forwarded, seconds) of the unlearning call
THROUGHPUT: Dict[Tuple[str, str], List[Tuple[int, float]]] = {}


CURRENT = [("", "")]


def install_timer() -> None:
    """Wrap pipeline.get_unlearn_method: count images forwarded through the model and time the call."""
    original = pipeline.get_unlearn_method

    def get(name):
        method = original(name)

        def wrapped(loaders, model, args, mask, device):
            seen = [0]

            def count(_module, inputs):
                seen[0] += len(inputs[0])

            handle = model.register_forward_pre_hook(count)
            start = time.perf_counter()
            try:
                return method(loaders, model, args, mask, device)
            finally:
                elapsed = time.perf_counter() - start
                handle.remove()
                THROUGHPUT.setdefault(CURRENT[0], []).append((seen[0], elapsed))
        return wrapped

    pipeline.get_unlearn_method = get


def lr_name(lr: float) -> str:
    return f"{lr:g}"


def call(entry, argv: List[str], save_dir: Path) -> None:
    """Run one entry point in-process with its stdout in save_dir/log.txt (skipped when already done)."""
    if (save_dir / "eval_result.json").exists() or (save_dir / "0model_SA_best.pth.tar").exists():
        return
    save_dir.mkdir(parents=True, exist_ok=True)
    with open(save_dir / "log.txt", "w", encoding="utf-8") as log, contextlib.redirect_stdout(log):
        entry.main(argv + ["--save_dir", str(save_dir), "--overwrite"])


def unlearn_run(out: Path, common: List[str], method: str, optim: str, lr: float, seed: int,
                args: argparse.Namespace) -> Path:
    save_dir = out / f"{method.lower()}_{optim}_lr{lr_name(lr)}" / f"seed{seed}"
    retain_lr = RETAIN_LR[optim]
    if method == "SFRon" and optim != "dual":
        retain_lr = lr  # one optimizer at --retain_lr for both objectives (research code)
    argv = common + ["--seed", str(seed), "--unlearn", UNLEARN[method], "--optim", optim,
                     "--unlearn_lr", str(lr), "--retain_lr", str(retain_lr),
                     "--model_path", str(out / "original" / "0model_SA_best.pth.tar")]
    if method == "SFRon":
        argv += ["--sfron_iters", str(args.sfron_iters)]
    else:
        argv += ["--unlearn_epochs", str(args.unlearn_epochs)]
    if method == "SalUn":
        argv += ["--mask_path", str(out / "mask" / f"seed{seed}" / f"with_{args.mask_ratio}.pt")]
    CURRENT[0] = (method, optim)
    call(ENTRY[method], argv, save_dir)
    return save_dir


def grid(method: str, optim: str) -> Tuple[float, ...]:
    if method in ("FT", "GA") and optim == "dual":
        return (GRID["dual"][1],)  # --unlearn_lr unused: retain-side SGD at --retain_lr
    return GRID[optim]


def table(paths: List[Path], plot: str = None) -> Tuple[str, list]:
    argv = ["--log_paths", *map(str, paths), "--format", "markdown"] + (["--plot", plot] if plot else [])
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        rows = parse_result.main(argv)
    return buffer.getvalue().strip(), rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/ic_digits")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--search_seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--optims", nargs="+", default=list(OPTIMS), choices=OPTIMS)
    parser.add_argument("--train_epochs", type=int, default=8, help="original model and Retrain")
    parser.add_argument("--unlearn_epochs", type=int, default=1)
    parser.add_argument("--sfron_iters", type=int, default=20, help="~one retain epoch at batch 64")
    parser.add_argument("--num_forget", type=int, default=130)
    parser.add_argument("--mask_ratio", default="0.5")
    args = parser.parse_args()
    out = Path(args.out)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    common = ["--dataset", "digits", "--arch", "resnet20s", "--batch_size", "64", "--device", "cpu",
              "--num_indexes_to_replace", str(args.num_forget)]
    schedule = ["--decreasing_lr", f"{args.train_epochs // 2},{args.train_epochs * 3 // 4}"]
    install_timer()
    started = time.time()
    log = lambda text: print(f"[{time.time() - started:7.1f}s] {text}", flush=True)  # noqa: E731

    call(main_train, common + ["--epochs", str(args.train_epochs), "--lr", "0.1"] + schedule, out / "original")
    log("original model trained")
    model_path = str(out / "original" / "0model_SA_best.pth.tar")
    for seed in args.seeds:
        mask_dir = out / "mask" / f"seed{seed}"  # the mask depends on the seed's forget set
        if not (mask_dir / f"with_{args.mask_ratio}.pt").exists():
            mask_dir.mkdir(parents=True, exist_ok=True)
            with open(mask_dir / "log.txt", "w", encoding="utf-8") as f, contextlib.redirect_stdout(f):
                generate_mask.main(common + ["--seed", str(seed), "--model_path", model_path,
                                             "--save_dir", str(mask_dir), "--unlearn_epochs", "1"])
        CURRENT[0] = ("Retrain", "sgd")
        call(main_forget, common + ["--seed", str(seed), "--unlearn", "retrain", "--unlearn_epochs",
                                    str(args.train_epochs), "--unlearn_lr", "0.1"] + schedule,
             out / "retrain_sgd_lr0.1" / f"seed{seed}")
    log("masks and Retrain done")
    retrain = [out / "retrain_sgd_lr0.1" / f"seed{seed}" / "eval_result.json" for seed in args.seeds]

    search: List[Path] = []
    for method in args.methods:
        for optim in args.optims:
            for lr in grid(method, optim):
                for seed in args.search_seeds:
                    search.append(unlearn_run(out, common, method, optim, lr, seed, args) / "eval_result.json")
        log(f"search {method} done")
    search_text, search_rows = table(retrain + search, plot=str(out / "avg_gap_vs_lr.png"))

    best: Dict[Tuple[str, str], float] = {}
    for row in search_rows:
        key = (row["method"], row["optim"])
        if row["method"] != "retrain" and (key not in best or row["avg_gap"] < best[key][1]):
            best[key] = (row["unlearn_lr"], row["avg_gap"])
    final: List[Path] = []
    for method in args.methods:
        for optim in args.optims:
            lr = best[("SalUn" if method == "SalUn" else UNLEARN[method], optim)][0]
            for seed in args.seeds:
                final.append(unlearn_run(out, common, method, optim, lr, seed, args) / "eval_result.json")
        log(f"final {method} done")
    final_text, _ = table(retrain + final)

    lines = ["| method | optim | images / s (median over runs) | runs |", "|---|---|---:|---:|"]
    for (method, optim), runs in THROUGHPUT.items():
        lines.append(f"| {method} | {optim} | {statistics.median(n / s for n, s in runs):.0f} | {len(runs)} |")
    (out / "throughput.json").write_text(json.dumps(
        {f"{m} {o}": [[n, s] for n, s in runs] for (m, o), runs in THROUGHPUT.items()}, indent=1))
    print(f"\n## Best learning rate per method and optimizer, seeds {args.seeds}\n\n{final_text}")
    print(f"\n## Learning-rate search, seeds {args.search_seeds}\n\n{search_text}")
    print("\n## Unlearning throughput (CPU, images forwarded through the model per second)\n")
    print("\n".join(lines))
    log(f"done; curves in {out / 'avg_gap_vs_lr.png'}")


if __name__ == "__main__":
    main()
