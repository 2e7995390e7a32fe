"""Digits DDPM, forget one digit: SalUn and SFR-on with and without DualOptim (``--dual``) against Retrain.

    python benchmarks/ddpm_digits.py                                   # default sizes (3000 pretrain steps, 100 sampling steps)
    python benchmarks/ddpm_digits.py --pretrain_iters 1500 --timesteps 50

Every step goes through the ImageGeneration.DDPM entry scripts' ``main(argv)``:
1. ``main_train`` pretrains the conditional DDPM on all ten digits and retrains it without
   ``--label_to_forget`` (the Retrain reference), both for ``--pretrain_iters`` steps;
2. ``generate_mask`` writes SalUn's saliency mask (``with_0.5.pt``) and SFR-on's Fisher-ratio mask
   (``fisher_1.0.pt``); ``train_classifier`` trains the small CNN judge;
3. ``main_forget`` unlearns the pretrained model with SalUn (RL loss) and SFR-on (AdaGA, alternating
   updates), each with one shared Adam state and with ``--dual`` (``--forget_iters`` steps);
4. ``sample`` draws ``--n_forget_samples`` images of the forgotten digit (timed: images per second)
   and ``--n_samples_per_class`` of every other digit from each model; ``classifier_evaluation``
   gives the unlearning accuracy (1 - accuracy of the forgotten digit) and the accuracy on each
   remaining digit, ``evaluator`` the FID of the remaining digits' samples against the real test
   images without the forgotten digit, in the judge's penultimate-layer features.

Prints a markdown table; writes ``<out>/ddpm_digits.json`` and ``<out>/ddpm_digits_grid.png``
(one row of samples per model: the pretrained model before unlearning, Retrain, every method after).
Run folders and samples go to ``--work_dir``.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch
from PIL import Image

from common.errors import UsageError, cli_main
from common.io import atomic_path, atomic_write_json, ensure_writable_dir
from ImageGeneration.core.images import load_image_folder
from ImageGeneration.DDPM import (
    classifier_evaluation, evaluator, generate_mask, main_forget, main_train, sample, train_classifier)
from ImageGeneration.DDPM.model import load_config, save_config

REPO = Path(__file__).resolve().parents[1]

#: method name -> main_forget flags (the pipeline script's settings; ``{mask}`` is the mask folder).
METHODS = {
    "SalUn": ["--mode", "salun", "--unlearn_loss", "rl", "--remain_alpha", "1e-3",
              "--mask_path", "{mask}/with_0.5.pt"],
    "SalUn + dual": ["--mode", "salun", "--unlearn_loss", "rl", "--remain_alpha", "1e-3",
                     "--mask_path", "{mask}/with_0.5.pt", "--dual", "--forget_lr", "1e-4"],
    "SFR-on": ["--mode", "sfron", "--method", "ron", "--unlearn_loss", "adaga", "--forget_alpha", "10.0",
               "--decay_forget_alpha", "--remain_alpha", "1.0", "--mask_path", "{mask}/fisher_1.0.pt"],
    "SFR-on + dual": ["--mode", "sfron", "--method", "ron", "--unlearn_loss", "adaga", "--forget_alpha", "1.0",
                      "--decay_forget_alpha", "--remain_alpha", "1.0", "--mask_path", "{mask}/fisher_1.0.pt",
                      "--dual", "--forget_lr", "1e-4"],
}
GRID_PER_CLASS = 3


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"), help="table JSON and grid PNG")
    parser.add_argument("--work_dir", default=str(REPO / "runs" / "ddpm_digits"), help="run folders and samples")
    parser.add_argument("--label_to_forget", type=int, default=0)
    parser.add_argument("--pretrain_iters", type=int, default=3000, help="steps of pretraining and of retraining")
    parser.add_argument("--pretrain_ema_rate", type=float, default=None,
                        help="EMA rate of pretraining/retraining (default: the config's rate, lowered to "
                             "1 - 10/--pretrain_iters so that the EMA forgets the random initialisation)")
    parser.add_argument("--forget_iters", type=int, default=100, help="unlearning steps of every method")
    parser.add_argument("--classifier_epochs", type=int, default=10)
    parser.add_argument("--n_forget_samples", type=int, default=500, help="samples of the forgotten digit")
    parser.add_argument("--n_samples_per_class", type=int, default=50, help="samples of every other digit")
    parser.add_argument("--timesteps", type=int, default=100, help="sampling steps")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), help=" | ".join(METHODS))
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (1 avoids thread thrashing on a machine shared with other jobs)")
    return parser.parse_args(argv)


def sized_config(kind: str, n_iters: int, folder: Path, ema_rate: Optional[float] = None) -> str:
    """The digits ``<kind>`` config with ``training.n_iters`` (and its snapshot interval) set to ``n_iters``."""
    config = load_config(None, "digits", kind)
    config.training.n_iters = n_iters
    config.training.snapshot_freq = n_iters
    if ema_rate is not None:
        config.model.ema_rate = ema_rate
    path = folder / f"digits_{kind}_{n_iters}.yml"
    save_config(config, path)
    return str(path)


def evaluate_model(run_dir: str, trained_classes: List[int], args: argparse.Namespace, judge: str) -> Dict:
    """Sample ``run_dir`` and score it: unlearning accuracy, remaining-class accuracy and FID, images/s."""
    common = ["--ckpt_folder", run_dir, "--mode", "sample_classes", "--timesteps", str(args.timesteps),
              "--seed", str(args.seed), "--device", args.device]
    k = args.label_to_forget
    row: Dict = {}
    if k in trained_classes:
        start = time.perf_counter()
        sample.main(common + ["--classes_to_generate", str(k), "--n_samples_per_class", str(args.n_forget_samples)])
        row["images_per_s"] = args.n_forget_samples / (time.perf_counter() - start)
        forgotten = classifier_evaluation.main(["--sample_path", f"{run_dir}/class_samples/{k}", "--ckpt_path", judge,
                                                "--label_of_forgotten_class", str(k), "--device", args.device])
        row["UA"] = forgotten["unlearning accuracy"]
    sample.main(common + ["--classes_to_generate", f"x{k}", "--n_samples_per_class", str(args.n_samples_per_class)])
    remaining = [c for c in range(10) if c != k]
    accuracies = [classifier_evaluation.main(["--sample_path", f"{run_dir}/class_samples/{c}", "--ckpt_path", judge,
                                              "--label_of_forgotten_class", str(c), "--device", args.device])
                  ["accuracy of forgotten class"] for c in remaining]
    row["remain_acc"] = float(np.mean(accuracies))
    fid = evaluator.main([f"{run_dir}/class_samples", "--ref_dataset", "digits", "--ref_split", "test",
                          "--label_to_forget", str(k), "--features", "classifier", "--classifier_path", judge,
                          "--device", args.device])
    row["FID"] = fid["FID"]
    return row


def save_grid(rows: Dict[str, str], path: Path, scale: int = 2) -> Path:
    """One row per model of ``GRID_PER_CLASS`` samples of each digit (blank where a model has none)."""
    tiles = []
    for run_dir in rows.values():
        row = []
        for label in range(10):
            folder = Path(run_dir, "class_samples", str(label))
            images = load_image_folder(folder, "class_samples", 1, 16)[:GRID_PER_CLASS] if folder.is_dir() else []
            for i in range(GRID_PER_CLASS):
                row.append(images[i, ..., 0] if i < len(images) else np.zeros((16, 16), np.uint8))
        tiles.append(np.concatenate([np.pad(t, 1, constant_values=128) for t in row], axis=1))
    grid = Image.fromarray(np.concatenate(tiles, axis=0)).resize(
        (tiles[0].shape[1] * scale, len(tiles) * tiles[0].shape[0] * scale), Image.NEAREST)
    with atomic_path(path) as tmp:
        grid.save(tmp, format="PNG")
    return path


@cli_main
def main(argv=None) -> Dict:
    args = parse_args(argv)
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        raise UsageError(f"--methods: unknown {unknown}; expected some of {', '.join(METHODS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    out = ensure_writable_dir(args.out, "--out")
    work = ensure_writable_dir(args.work_dir, "--work_dir")
    configs = ensure_writable_dir(work / "configs", "--work_dir")
    k, dev = str(args.label_to_forget), ["--device", args.device]
    started = time.perf_counter()

    # The pretrained and retrained models are sampled with their EMA weights. At the config's rate
    # (0.999) a 1500-step run still carries a fifth of the random initialisation, which made their
    # samples noisier than the unlearned models' (those continue from the raw weights).
    ema_rate = args.pretrain_ema_rate
    if ema_rate is None:
        ema_rate = min(load_config(None, "digits", "pretrain").model.ema_rate, 1 - 10 / args.pretrain_iters)
    pretrain_cfg = sized_config("pretrain", args.pretrain_iters, configs, ema_rate)
    train = ["--exp_root", str(work), "--config", pretrain_cfg, "--seed", str(args.seed)] + dev
    pretrained = main_train.main(train + ["--mode", "pretrain"])
    retrained = main_train.main(train + ["--mode", "retrain", "--label_to_forget", k])
    mask_dir = f"{pretrained}/mask_{k}"
    for mode, threshold in (("salun", "0.5"), ("sfron", "1.0")):
        generate_mask.main(["--ckpt_folder", pretrained, "--mode", mode, "--label_to_forget", k,
                            "--threshold", threshold] + dev)
    judge = str(work / "judge")
    train_classifier.main(["--save_dir", judge, "--n_epochs", str(args.classifier_epochs)] + dev)

    runs = {"Pretrained (before)": pretrained, "Retrain": retrained}
    for name in args.methods:
        kind = "sfron" if "SFR-on" in name else "saliency_unlearn"
        flags = [f.format(mask=mask_dir) for f in METHODS[name]]
        runs[name] = main_forget.main(["--exp_root", str(work), "--ckpt_folder", pretrained, "--label_to_forget", k,
                                       "--config", sized_config(kind, args.forget_iters, configs),
                                       "--seed", str(args.seed)] + flags + dev)

    all_classes = list(range(10))
    results = {name: evaluate_model(run_dir, [c for c in all_classes if name != "Retrain" or c != int(k)],
                                    args, judge)
               for name, run_dir in runs.items()}
    grid = save_grid(runs, out / "ddpm_digits_grid.png")

    lines = [f"digits DDPM, forget digit {k}: pretrain/retrain {args.pretrain_iters} steps (EMA {ema_rate:.4g}), "
             f"unlearning {args.forget_iters} steps, {args.n_forget_samples} forget-digit samples and {args.n_samples_per_class} "
             f"per remaining digit at {args.timesteps} sampling steps", "",
             "| model | UA (forget digit) ↑ | remaining-digit accuracy ↑ | FID (remaining, judge features) ↓ "
             "| sampling images/s |", "|---|---:|---:|---:|---:|"]
    for name, row in results.items():
        ua = f"{row['UA'] * 100:.1f}%" if "UA" in row else "n/a (never trained)"
        speed = f"{row['images_per_s']:.1f}" if "images_per_s" in row else "-"
        lines.append(f"| {name} | {ua} | {row['remain_acc'] * 100:.1f}% | {row['FID']:.2f} | {speed} |")
    minutes = (time.perf_counter() - started) / 60
    lines += ["", f"total wall clock {minutes:.1f} min; grid: {grid}"]
    print("\n".join(lines))
    atomic_write_json({"args": vars(args), "pretrain_ema_rate": ema_rate, "runs": runs, "results": results,
                       "minutes": minutes}, out / "ddpm_digits.json")
    return results


if __name__ == "__main__":
    main()
