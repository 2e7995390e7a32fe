"""The DDPM modality of the evidence engine: class forgetting where the optimizer can matter.

What :func:`benchmarks.evidence.engine.run` needs for the conditional DDPM on the embedded digits:

1. **a model that generates what it has to forget, and Retrain**: the original (``main_train --mode
   pretrain``) and Retrain (``--mode retrain``, without ``label_to_forget``, on every seed) train for the same
   steps. A judge (``train_classifier``) classifies their samples. The checks: the judge's accuracy on the
   real test digits, the original's samples of the forgotten digit being recognised as that digit, and the
   stability of Retrain's remaining-digit accuracy over seeds (:func:`check_setting`);
2. **the gap** of an unlearned model is the mean of ``|UA - 100|`` and ``|RA - RA(Retrain)|`` in points:
   UA is the share of its samples of the forgotten digit that the judge does not recognise as it (Retrain
   never learnt the digit, so it cannot be conditioned on it: its UA is 100 by definition) and RA the
   judge's accuracy on its samples of the other digits, against Retrain's mean over seeds. The FID of the
   remaining digits (judge features, against the real test digits) is reported, not part of the gap;
3. **the method table** :data:`METHODS`: SalUn and SFR-on, each with one Adam state for both objectives
   (``adam``: the config's ``optim.lr`` is the one lr, a tied grid) and with ``--dual`` (the forget Adam at
   ``--forget_lr`` x the remain Adam at ``optim.lr``); the engine searches, extends and seeds them.

Every model is one :class:`ModelRun` (a call of ``main_train`` or ``main_forget``, then sampling and judging
through ``sample`` and ``classifier_evaluation``/``evaluator``), finished once its ``metrics.json`` exists, so
an interrupted benchmark resumes. Besides the engine's files, ``samples.png`` (a row of samples per model)
goes to the work folder.

The trajectory of a best setting's run (:func:`record_trajectory`): a finished run keeps only its last model
(the research code overwrites ``ckpts/ckpt.pth`` at every snapshot), so the run is made again (the same flags
and seed: on CPU the same numbers) with a snapshot every :data:`TRAJECTORY_POINTS`-th of its steps kept
(``main_forget --keep_snapshots``); the original and each kept model are sampled and judged as every model is
(the gap's UA and RA need the samples), on the run's seed; the last point is checked against the finished run.
"""
from __future__ import annotations

import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from benchmarks.evidence.design import (TIED, TRAJECTORY_POINTS, MethodGrid, decade_grid, rerun_check, run_name,
                                        setting_checks)
from benchmarks.evidence.engine import Method, Modality, report_text
from common.evidence_runs import Call, Runner
from common.io import atomic_path, atomic_write_json, read_json
from ImageGeneration.core.images import load_image_folder
from ImageGeneration.DDPM import classifier_evaluation, evaluator, main_forget, main_train, sample
from ImageGeneration.DDPM.checkpoints import CKPT_RELPATH
from ImageGeneration.DDPM.classifier import DEFAULT_ARCH, classifier_filename
from ImageGeneration.DDPM.config import load_config, save_config
from ImageGeneration.DDPM.unlearn import config_kind

#: reported metrics (percent, FID); the gap uses UA and RA
METRICS = ("UA", "RA", "FID")
GAP_METRICS = ("UA", "RA")
#: display name -> ``main_forget`` flags and config kind: the research code's README commands (SFR-on's forget
#: alpha is 10 with one optimizer state and 1 with --dual there); ``{mask}`` is the original's mask folder
METHODS = {
    "SalUn": Method("main_forget", ("--mode", "salun", "--unlearn_loss", "rl", "--remain_alpha", "1e-3",
                                    "--mask_path", "{mask}/with_0.5.pt"), "saliency_unlearn",
                    {"dual": ("--dual",)}),
    "SFRon": Method("main_forget", ("--mode", "sfron", "--method", "ron", "--unlearn_loss", "adaga",
                                    "--decay_forget_alpha", "--remain_alpha", "1.0", "--mask_path",
                                    "{mask}/fisher_1.0.pt"), "sfron",
                    {"adam": ("--forget_alpha", "10.0"), "dual": ("--forget_alpha", "1.0", "--dual")}),
}


def evidence_grids(methods: Sequence[str] = ("SalUn", "SFRon")) -> Tuple[MethodGrid, ...]:
    """Per method a tied grid for one Adam state (over three decades) and a ``--dual`` grid: forget lrs over
    two decades x the config's remain lr (1e-4) and the pretraining lr (1e-3), both forget axes at the
    design's resolution."""
    return tuple(grid for method in methods for grid in (
        MethodGrid(method, "adam", decade_grid(1e-5, 1e-2), None),
        MethodGrid(method, "dual", decade_grid(1e-5, 1e-3), (1e-4, 1e-3))))


@dataclass(frozen=True)
class DDPMEvidenceConfig:
    """One DDPM evidence benchmark: models, step budget, sampling, grids and seeds (every field is recorded)."""
    out: str
    pretrain_iters: int
    forget_iters: int
    grids: Tuple[MethodGrid, ...]
    seeds: Tuple[int, ...]
    search_seed: int
    label_to_forget: int = 0
    classifier_epochs: int = 10
    n_forget_samples: int = 100
    n_samples_per_class: int = 20
    timesteps: int = 50
    max_extensions: int = 2
    stability: bool = True      # the best settings' runs made again with snapshots kept (record_trajectory)
    device: str = "cpu"
    thresholds: Mapping[str, float] = field(default_factory=lambda: dict(
        judge_test_acc=95.0, original_forget_acc=90.0, retrain_remain_std=5.0))


PRESETS: Dict[str, DDPMEvidenceConfig] = {
    # 2 CPU cores: 1,500 pretraining steps at batch 64 (the original and each Retrain); unlearning 100 steps,
    # each with a forget and a remain batch of 64; 100 samples of the forgotten digit and 20 of each other
    # digit per model, 50 DDIM steps; the judge trains 30 epochs (96% on the real test digits; 91% after 10)
    "digits": DDPMEvidenceConfig(out="runs/ddpm_evidence_digits", pretrain_iters=1500, forget_iters=100,
                                 classifier_epochs=30, grids=evidence_grids(), seeds=(1, 2, 3), search_seed=1),
    # the pipeline at test size (seconds): not a measurement
    "quick": DDPMEvidenceConfig(
        out="runs/ddpm_evidence_quick", pretrain_iters=30, forget_iters=4, classifier_epochs=1, n_forget_samples=8,
        n_samples_per_class=2, timesteps=4, seeds=(1, 2), search_seed=1, max_extensions=1,
        grids=(MethodGrid("SalUn", "adam", (1e-4, 1e-3), None), MethodGrid("SalUn", "dual", (1e-4, 1e-3), (1e-4,)))),
}


@dataclass(frozen=True)
class Judging:
    """How every model's samples are drawn and judged."""
    label_to_forget: int
    judge: str                  # the judge classifier's file
    n_forget_samples: int
    n_samples_per_class: int
    timesteps: int
    device: str


@dataclass(frozen=True)
class ModelRun:
    """A model to train (``main_train``) or unlearn (``main_forget``) with ``argv`` into ``save_dir`` (its
    ``--exp_root``), then sample and judge with the same ``seed``."""
    script: str
    argv: Tuple[str, ...]
    save_dir: str
    seed: int
    judging: Judging

    @property
    def knows_forgotten_class(self) -> bool:
        """Retrain never learnt the forgotten class and cannot be sampled on it."""
        return not (self.script == "main_train" and "retrain" in self.argv)


SCRIPTS = {"main_train": main_train, "main_forget": main_forget}


def finished_run(exp_root: Path) -> Optional[str]:
    """The run folder under ``<exp_root>/results`` that finished (wrote ``run.json``), if any."""
    done = sorted(exp_root.glob("results/**/run.json"))
    return str(done[-1].parent) if done else None


def train_and_judge(run: ModelRun) -> None:
    """Train or unlearn the model of ``run`` (resuming an interrupted run), sample and judge it, and write
    ``<save_dir>/metrics.json``: UA and RA in percent, the FID of the remaining digits, sampling images/s."""
    save_dir = Path(run.save_dir)
    run_dir = finished_run(save_dir) or SCRIPTS[run.script].main(
        [*run.argv, "--exp_root", str(save_dir), "--seed", str(run.seed), "--resume"])
    atomic_write_json({"run_dir": run_dir, **judge_samples(run_dir, run.judging, run.seed,
                                                           run.knows_forgotten_class)},
                      save_dir / "metrics.json")


def judge_samples(run_dir: str, judging: Judging, seed: int, knows_forgotten_class: bool = True) -> Dict[str, float]:
    """Sample ``run_dir`` and score its samples with the judge (``sample``, ``classifier_evaluation`` and
    ``evaluator``): UA (percent of the forgotten digit's samples not recognised as it; absent without
    ``knows_forgotten_class``), RA (percent of the other digits' samples recognised as theirs), FID."""
    k, device = judging.label_to_forget, ["--device", judging.device]
    common = ["--ckpt_folder", run_dir, "--mode", "sample_classes", "--timesteps", str(judging.timesteps),
              "--seed", str(seed), *device]
    judge = lambda label: classifier_evaluation.main([  # noqa: E731
        "--sample_path", f"{run_dir}/class_samples/{label}", "--ckpt_path", judging.judge,
        "--label_of_forgotten_class", str(label), *device])
    metrics: Dict[str, float] = {}
    if knows_forgotten_class:
        start = time.perf_counter()
        sample.main(common + ["--classes_to_generate", str(k), "--n_samples_per_class", str(judging.n_forget_samples)])
        metrics["images_per_s"] = judging.n_forget_samples / (time.perf_counter() - start)
        metrics["UA"] = 100.0 * judge(k)["unlearning accuracy"]
    sample.main(common + ["--classes_to_generate", f"x{k}", "--n_samples_per_class", str(judging.n_samples_per_class)])
    remaining = [label for label in range(10) if label != k]
    metrics["RA"] = 100.0 * statistics.fmean(judge(label)["accuracy of forgotten class"] for label in remaining)
    metrics["FID"] = evaluator.main([f"{run_dir}/class_samples", "--ref_dataset", "digits", "--ref_split", "test",
                                     "--label_to_forget", str(k), "--features", "classifier",
                                     "--classifier_path", judging.judge, *device])["FID"]
    return metrics


TRAJECTORY = "trajectory.json"


@dataclass(frozen=True)
class DDPMTrajectory:
    """The best-setting unlearning run ``run`` to make again keeping a snapshot every ``interval`` steps."""
    run: ModelRun
    interval: int


def record_trajectory(spec: DDPMTrajectory) -> None:
    """Make the finished ``main_forget`` run ``spec.run`` again under ``<save_dir>/trajectory`` with
    ``training.snapshot_freq`` = ``spec.interval`` and ``--keep_snapshots``; sample and judge
    (:func:`judge_samples`, the run's seed) the original, each kept snapshot and the last model, each as a run
    folder ``steps/step<k>`` holding its checkpoint (deleted once judged); write ``trajectory/trajectory.json``:
    ``points`` (``progress``: steps done, and :data:`METRICS`), ``interval_steps``, and whether the last point
    equals the finished run's ``metrics.json`` (``matches_finished_run``, with the largest absolute difference)."""
    run = spec.run
    out = Path(run.save_dir) / "trajectory"
    for stale in ("results", "steps"):  # an interrupted attempt starts over
        shutil.rmtree(out / stale, ignore_errors=True)
    argv = list(run.argv)
    config = load_config(argv[argv.index("--config") + 1], None, config_kind(argv[argv.index("--mode") + 1]))
    config.training.snapshot_freq = spec.interval
    argv[argv.index("--config") + 1] = str(out / "config.yml")
    save_config(config, out / "config.yml")
    run_dir = Path(SCRIPTS[run.script].main([*argv, "--keep_snapshots", "--exp_root", str(out),
                                             "--seed", str(run.seed)]))
    n_iters = config.training.n_iters
    kept = range(spec.interval, n_iters, spec.interval)
    checkpoints = {0: Path(argv[argv.index("--ckpt_folder") + 1]) / CKPT_RELPATH,
                   **{step: run_dir / "ckpts" / f"ckpt_{step}.pth" for step in kept}, n_iters: run_dir / CKPT_RELPATH}
    points = []
    for step, checkpoint in checkpoints.items():
        folder = out / "steps" / f"step{step}"
        (folder / CKPT_RELPATH).parent.mkdir(parents=True)
        (shutil.copyfile if step == 0 else shutil.move)(checkpoint, folder / CKPT_RELPATH)
        metrics = judge_samples(str(folder), run.judging, run.seed)
        (folder / CKPT_RELPATH).unlink()
        points.append({"progress": step, **{key: metrics[key] for key in METRICS}})
    atomic_write_json({"points": points, "interval_steps": spec.interval, "n_iters": n_iters,
                       **rerun_check(points[-1], read_json(Path(run.save_dir) / "metrics.json"), METRICS)},
                      out / TRAJECTORY)


def gap(metrics: Mapping[str, float], reference: Mapping[str, float]) -> float:
    """Mean absolute difference, in points, of :data:`GAP_METRICS` to the reference."""
    return statistics.fmean(abs(metrics[key] - reference[key]) for key in GAP_METRICS)


def sized_config(kind: str, folder: Path, n_iters: int, lr: Optional[float] = None,
                 ema_rate: Optional[float] = None) -> str:
    """The digits ``<kind>`` config with ``training.n_iters`` (its snapshot interval too), ``optim.lr`` and
    ``model.ema_rate`` set, written to ``folder``; returns its path."""
    config = load_config(None, "digits", kind)
    config.training.n_iters = config.training.snapshot_freq = n_iters
    if lr is not None:
        config.optim.lr = lr
    if ema_rate is not None:
        config.model.ema_rate = ema_rate
    path = folder / (f"digits_{kind}_{n_iters}" + ("" if lr is None else f"_lr{lr:g}") + ".yml")
    if not path.exists():
        save_config(config, path)
    return str(path)


def check_setting(judge_acc: float, original: Mapping[str, float], retrain: Mapping[int, Mapping[str, float]],
                  thresholds: Mapping[str, float]) -> Dict[str, object]:
    """Whether the setting can discriminate: the judge recognises real digits (``judge_acc``, percent), the
    original generates the digit to forget (its samples of it are recognised: ``100 - UA``) and Retrain's
    remaining-digit accuracy is stable over seeds (population std)."""
    forget_acc = 100.0 - original["UA"]
    remain_std = float(np.std([r["RA"] for r in retrain.values()]))
    checks = {
        "judge_test_acc": (judge_acc, judge_acc >= thresholds["judge_test_acc"],
                           f"judge's accuracy on the real test digits {judge_acc:.2f} "
                           f"(>= {thresholds['judge_test_acc']})"),
        "original_forget_acc": (forget_acc, forget_acc >= thresholds["original_forget_acc"],
                                f"original's samples of the forgotten digit recognised {forget_acc:.2f} "
                                f"(>= {thresholds['original_forget_acc']})"),
        "retrain_remain_std": (remain_std, remain_std <= thresholds["retrain_remain_std"],
                               f"Retrain's remaining-digit accuracy std over seeds {remain_std:.2f} "
                               f"(<= {thresholds['retrain_remain_std']})"),
    }
    return setting_checks(checks)


class DDPMEvidence(Modality):
    """The DDPM modality of :func:`benchmarks.evidence.engine.run` for one :class:`DDPMEvidenceConfig`."""

    metrics = METRICS
    gap_metrics = GAP_METRICS   # avg_std: the spread of the gap's metrics (the FID's std is in other units)
    stability_metrics = GAP_METRICS
    gap_label = "gap to Retrain, mean |UA-100|, |RA-RA_R| (search seed)"
    progress = "step"           # one forget and one remain batch each

    def __init__(self, config: DDPMEvidenceConfig) -> None:
        self.config = config
        self.out = Path(config.out)
        self.device = ["--device", config.device]
        self.configs = self.out / "configs"
        self.configs.mkdir(parents=True, exist_ok=True)
        self.judge = self.out / "judge"
        judge_file = self.judge / classifier_filename("digits", DEFAULT_ARCH["digits"])
        self.judging = Judging(config.label_to_forget, str(judge_file), config.n_forget_samples,
                               config.n_samples_per_class, config.timesteps, config.device)
        self.reference: Dict[str, float] = {}
        self.samples: Dict[str, str] = {}  # model -> run folder, for samples.png

    def model_call(self, script: str, argv: Sequence[str], name: str, seed: int) -> Call:
        run = ModelRun(script, tuple(argv) + tuple(self.device), str(self.out / name / f"seed{seed}"), seed,
                       self.judging)
        return Call("benchmarks.evidence.ddpm:train_and_judge", run, Path(run.save_dir), "metrics.json")

    def read(self, call: Call) -> Dict[str, float]:
        """A finished run's metrics and its folder (``run_dir``)."""
        return {"run_dir": str(call.save_dir), **read_json(call.save_dir / "metrics.json")}

    # -- judge, original, Retrain, masks ----------------------------------------------------------------

    def train_judge(self, runner: Runner) -> float:
        """The judge classifier; returns its accuracy on the real test digits (percent)."""
        arch = DEFAULT_ARCH["digits"]
        record = f"run_train_classifier_digits_{arch}.json"
        runner.run([Call("ImageGeneration.DDPM.train_classifier:main", (
            "--save_dir", str(self.judge), "--n_epochs", str(self.config.classifier_epochs),
            "--seed", str(self.config.search_seed), *self.device), self.judge, record)])
        return 100.0 * read_json(self.judge / record)["metrics"]["test_accuracy"][-1]

    def pretrain_config(self) -> Tuple[str, float]:
        # The original and Retrain are sampled with their EMA weights; at the config's rate (0.999) a 1,500-step
        # run still carries a fifth of its random initialisation, so the rate is lowered to 1 - 10 / steps (0, no
        # averaging, for runs under 10 steps: the config check refuses a negative rate)
        iters = self.config.pretrain_iters
        ema_rate = max(0.0, min(load_config(None, "digits", "pretrain").model.ema_rate, 1 - 10 / iters))
        return sized_config("pretrain", self.configs, iters, ema_rate=ema_rate), ema_rate

    def train_models(self, runner: Runner,
                     seeds: Sequence[int]) -> Tuple[Dict[str, float], Dict[int, Dict[str, float]]]:
        """The original (on ``search_seed``) and Retrain on each seed, as one batch; their metrics."""
        pretrain, _ = self.pretrain_config()
        train = ["--config", pretrain]
        calls = [self.model_call("main_train", train + ["--mode", "pretrain"], "original", self.config.search_seed)]
        calls += [self.model_call("main_train", train + ["--mode", "retrain", "--label_to_forget",
                                                         str(self.config.label_to_forget)], "retrain", seed)
                  for seed in seeds]
        original, *retrain = runner.records(calls, self.read, METRICS)
        self.samples["original"] = original["run_dir"]
        self.samples["Retrain"] = retrain[0]["run_dir"]
        return original, dict(zip(seeds, retrain))

    def mask_folder(self, original_run: str) -> Path:
        return Path(original_run) / f"mask_{self.config.label_to_forget}"

    def make_masks(self, runner: Runner, original_run: str) -> None:
        """SalUn's saliency mask (``with_0.5.pt``) and SFR-on's Fisher-ratio mask (``fisher_1.0.pt``)."""
        folder = self.mask_folder(original_run)
        runner.run([Call("ImageGeneration.DDPM.generate_mask:main", (
            "--ckpt_folder", original_run, "--mode", mode, "--label_to_forget", str(self.config.label_to_forget),
            "--threshold", threshold, "--seed", str(self.config.search_seed), *self.device), folder, f"run_{mode}.json")
            for mode, threshold in (("salun", "0.5"), ("sfron", "1.0"))])

    def prepare(self, runner: Runner, log: Callable[[str], None]) -> Dict[str, object]:
        """The judge, the original, Retrain on every seed and the masks."""
        config = self.config
        judge_acc = self.train_judge(runner)
        log(f"judge trained: {judge_acc:.2f}% on the real test digits")
        original, retrain = self.train_models(runner, config.seeds)
        log(f"original and Retrain (seeds {list(config.seeds)}) trained and judged")
        self.make_masks(runner, self.samples["original"])
        self.reference = {"UA": 100.0, "RA": statistics.fmean(r["RA"] for r in retrain.values())}
        _, ema_rate = self.pretrain_config()
        return {"setting": check_setting(judge_acc, original, retrain, config.thresholds),
                "pretrain_ema_rate": ema_rate, "step_budget": step_budget(config), "reference": dict(self.reference),
                "retrain": {str(s): r for s, r in retrain.items()}, "original": original,
                "original_gap": self.gap(original)}

    # -- unlearning runs -----------------------------------------------------------------------------

    def unlearn_call(self, method: str, optim: str, forget_lr: float, retain_lr: float, seed: int) -> Call:
        """One unlearning run: with one Adam state (:data:`TIED`) ``optim.lr`` is ``forget_lr``; with
        ``--dual`` the forget optimizer runs at ``--forget_lr`` and the remain one at ``optim.lr``."""
        tied = retain_lr == TIED
        spec = METHODS[method]
        config = sized_config(spec.kind, self.configs, self.config.forget_iters, lr=forget_lr if tied else retain_lr)
        flags = [flag.format(mask=self.mask_folder(self.samples["original"])) for flag in spec.argv(optim)]
        argv = ["--ckpt_folder", self.samples["original"], "--label_to_forget", str(self.config.label_to_forget),
                "--config", config, *flags] + ([] if tied else ["--forget_lr", str(forget_lr)])
        return self.model_call(spec.script, argv, run_name(MethodGrid(method, optim, (), None), forget_lr, retain_lr),
                               seed)

    def gap(self, metrics: Mapping[str, float]) -> float:
        return gap(metrics, self.reference)

    def trajectory_call(self, method: str, optim: str, call: Call) -> Call:
        """The best setting's run ``call`` made again keeping a snapshot every :data:`TRAJECTORY_POINTS`-th of
        its steps (:func:`record_trajectory`)."""
        interval = max(1, round(self.config.forget_iters / TRAJECTORY_POINTS))
        return Call("benchmarks.evidence.ddpm:record_trajectory", DDPMTrajectory(call.argument, interval),
                    call.save_dir / "trajectory", TRAJECTORY)

    def read_trajectory(self, call: Call) -> List[Dict[str, float]]:
        """Step 0 (the original, sampled on the run's seed), then each kept snapshot and the last model."""
        return read_json(call.save_dir / TRAJECTORY)["points"]

    # -- reporting -------------------------------------------------------------------------------------

    def finish(self, results: Dict[str, object]) -> None:
        """``samples.png``: the original, Retrain and each method x optimizer's best run on the search seed."""
        runs = dict(self.samples)
        for record in results["methods"]:
            run = record["per_seed"][str(self.config.search_seed)]
            if "run_dir" in run and not run.get("diverged"):
                runs[f"{record['method']}/{record['optim']}"] = run["run_dir"]
        save_sample_grid(runs, self.out / SAMPLES)

    def title(self, results: Mapping[str, object]) -> str:
        budget = results["step_budget"]
        return (f"digits DDPM, forget digit {self.config.label_to_forget}: {budget['forget_steps']} forget + "
                f"{budget['remain_steps']} remain batches of {budget['batch_size']}, search seed "
                f"{self.config.search_seed}")


SAMPLES = "samples.png"


def step_budget(config: DDPMEvidenceConfig) -> Dict[str, int]:
    """Batches of one unlearning run: every step draws a forget and a remain batch (one joint update with one
    Adam state; a forget update then a remain update with ``--dual``)."""
    batch = {kind: load_config(None, "digits", kind).training.batch_size for kind in {m.kind for m in METHODS.values()}}
    if len(set(batch.values())) != 1:
        raise ValueError(f"the digits forgetting configs disagree on the batch size: {batch}")
    return {"forget_steps": config.forget_iters, "remain_steps": config.forget_iters,
            "batch_size": next(iter(batch.values())), "pretrain_steps": config.pretrain_iters}


GRID_PER_CLASS = 3


def save_sample_grid(runs: Mapping[str, str], path: Path, scale: int = 2) -> Path:
    """One row per model of :data:`GRID_PER_CLASS` samples of each digit (blank where a model has none)."""
    tiles = []
    for run_dir in runs.values():
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


def report(results: Mapping[str, object]) -> str:
    """Everything the benchmark prints at its end (:func:`benchmarks.evidence.engine.report_text`)."""
    config, budget = results["config"], results["step_budget"]
    caption = (f"digits DDPM, forget digit {config['label_to_forget']}: original and Retrain "
               f"{budget['pretrain_steps']} steps; per unlearning run {budget['forget_steps']} forget + "
               f"{budget['remain_steps']} remain batches of {budget['batch_size']}; {config['n_forget_samples']} samples of the forgotten digit and "
               f"{config['n_samples_per_class']} of each other digit per model at {config['timesteps']} sampling "
               f"steps; grid searched on seed {config['search_seed']}, best setting on seeds {list(config['seeds'])}; "
               "gap = mean(|UA - 100|, |RA - RA(Retrain)|), FID not in the gap")
    return report_text(DDPMEvidence, results, caption)
