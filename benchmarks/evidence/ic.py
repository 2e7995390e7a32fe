"""The image-classification modality of the evidence engine: random forgetting where the optimizer can matter.

DualOptim claims a lower average gap to Retrain and less sensitivity to the learning rate and the seed.
:class:`ICEvidence` supplies what :func:`benchmarks.evidence.engine.run` needs to measure both:

1. **a memorising original model and a meaningful Retrain** (:meth:`ICEvidence.prepare`): the original
   trains (``main_train.py``) until it fits its training set; Retrain (``main_forget.py --unlearn retrain``,
   same schedule) runs on every seed, and its mean UA / RA / TA / MIA is the reference of every gap. The
   original's accuracy on its training set, Retrain's forget and test accuracy and the std of Retrain's MIA
   over seeds are checked against the design's criteria and recorded (:func:`check_setting`);
2. **the method table** :data:`METHODS`, the only place that says what a method is here (SalUn = RL with
   a saliency mask), and **one unlearning setting** (:meth:`ICEvidence.unlearn_call`): an entry script's
   ``main(argv)``, run in-process or in a worker, its printed log in ``<run>/log.txt``; a folder whose
   ``run.json`` exists is skipped and an unfinished one resumes from its snapshot;
3. **the gap**: ``parse_result.py``'s average gap (mean over UA, RA, TA, MIA of ``|x - Retrain's|``);
4. **the trajectory** of each method: each ``checkpoint_{e}.pt`` an epoch method (SalUn, SCRUB, ...) saved, or
   each ``checkpoint_step{s}.pt`` SFR-on saved every ``sfron_iters / sfron_points`` retain steps
   (``--sfron_checkpoint_every``), evaluated on the run's split (:func:`evaluate_checkpoints`), after the
   original (progress 0). SFR-on's steps are scaled to the epoch methods' budget, so one figure has one axis;
5. **the learning-rate-free recipes** (:func:`lr_free_grids`): their forget axis is a multiple of the package
   default, and the default runs on every seed with no search.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from benchmarks.evidence.design import TIED, MethodGrid, decade_grid, lr_text, run_name, setting_checks
from benchmarks.evidence.engine import Method, Modality, report_text
from common.datasets import ImageTree
from common.device import get_device
from common.evidence_runs import DIVERGED_FILE, Call, Runner
from common.io import atomic_path, atomic_write_json, read_json
from dualoptim.recipes import LR_FREE_DEFAULT_LR
from ImageClassification import data as ic_data
from ImageClassification import main_train, parse_result
from ImageClassification.arg_parser import parse_config
from ImageClassification.evaluation import evaluate
from ImageClassification.pipeline import load_original_model
from ImageClassification.unlearn.sfron import sfron_checkpoint_name

METRICS = parse_result.METRICS
#: display name -> entry script, the flags that make the method, and its budget kind ("epochs":
#: ``--unlearn_epochs``; "steps": ``--sfron_iters``); ``{mask}`` is the seed's SalUn mask
METHODS = {
    "SalUn": Method("main_random", ("--unlearn", "RL", "--mask_path", "{mask}"), "epochs"),
    "RL": Method("main_random", ("--unlearn", "RL"), "epochs"),
    "SFRon": Method("main_random_sfron", ("--unlearn", "SFRon"), "steps"),
    "SCRUB": Method("main_forget", ("--unlearn", "SCRUB"), "epochs"),
    "FT": Method("main_forget", ("--unlearn", "FT"), "epochs"),
    "GA": Method("main_forget", ("--unlearn", "GA"), "epochs"),
}


@dataclass(frozen=True)
class EvidenceConfig:
    """One evidence benchmark: data, models, step budget, grids and seeds (every field is recorded)."""
    out: str
    dataset: str
    arch: str
    num_forget: int
    train_epochs: int
    decreasing_lr: str
    unlearn_epochs: int
    sfron_iters: int
    grids: Tuple[MethodGrid, ...]
    seeds: Tuple[int, ...]
    search_seed: int
    data: Optional[str] = None
    train_subset: Optional[int] = None
    test_subset: Optional[int] = None
    train_lr: float = 0.1
    train_batch_size: int = 64
    batch_size: int = 16
    mask_ratio: str = "0.5"
    mia: str = "sfron"
    max_extensions: int = 2
    stability: bool = True                   # evaluate every epoch of the best settings' runs
    sfron_points: int = 5                    # SFR-on's trajectory: the model every sfron_iters / sfron_points steps
    device: str = "cpu"
    extra_flags: Tuple[str, ...] = ()        # e.g. --no-aug --amp --channels_last, given to every run
    thresholds: Mapping[str, float] = field(default_factory=lambda: dict(
        original_train_acc=99.0, retrain_forget_vs_test=5.0, retrain_mia_std=5.0))


SHARED_CIFAR10_ZIP = Path(__file__).resolve().parents[3] / "shared" / "data" / "cifar10-jpeg.zip"
#: one forget-lr range per optimizer family (SGD steps, AdamW steps), both at the design's resolution
#: (:data:`benchmarks.evidence.design.POINTS_PER_DECADE`), and one retain-lr grid (the retain optimizer is SGD
#: under sgd and dual alike), the same for every method: nothing is tuned per method
SGD_FORGET_LRS = decade_grid(1e-3, 1e-1)
ADAM_FORGET_LRS = decade_grid(1e-5, 1e-3)
SFRON_SGD_LRS = decade_grid(1e-4, 1e-1)     # one SGD for both objectives: a tied grid over three decades
RETAIN_LRS = (3e-3, 1e-2)


def evidence_grids(methods: Sequence[str]) -> Tuple[MethodGrid, ...]:
    """``sgd`` and ``dual`` grids for each method: SalUn and SCRUB under ``sgd`` step forget batches at
    ``--unlearn_lr`` and retain batches at ``--retain_lr``, so both are searched, on the same retain grid
    as ``dual``; SFR-on under ``sgd`` has one lr (a tied grid)."""
    grids = []
    for method in methods:
        if method == "SFRon":
            grids.append(MethodGrid(method, "sgd", SFRON_SGD_LRS, None))
        else:
            grids.append(MethodGrid(method, "sgd", SGD_FORGET_LRS, RETAIN_LRS))
        grids.append(MethodGrid(method, "dual", ADAM_FORGET_LRS, RETAIN_LRS))
    return tuple(grids)


#: the learning-rate-free recipes measured (#29): Prodigy or schedule-free AdamW forget, SGD retain
LR_FREE_OPTIMS = ("dual_prodigy", "dual_sf")


def lr_free_grids(methods: Sequence[str]) -> Tuple[MethodGrid, ...]:
    """Each learning-rate-free recipe per method: its forget axis 0.1x to 10x its package default at the design's
    resolution (two decades, as the sgd and dual axes; the middle of :data:`dualoptim.recipes.LR_FREE_MULTIPLIERS`,
    and the edge extension goes further where a curve has not risen), on the same retain-lr grid as ``sgd``
    and ``dual``, and its default run on every seed (no search)."""
    return tuple(MethodGrid(method, optim, decade_grid(LR_FREE_DEFAULT_LR[optim] / 10, LR_FREE_DEFAULT_LR[optim] * 10),
                            RETAIN_LRS, default_lr=LR_FREE_DEFAULT_LR[optim])
                 for optim in LR_FREE_OPTIMS for method in methods)


#: forget and retain lr grids by optimizer family, for the optimizer-pair ablation (SFR-on): every forget axis
#: at the design's resolution; a retain grid per retain family (an SGD and an AdamW retain lr differ in scale)
FAMILY_FORGET_LRS = {"sgd": SGD_FORGET_LRS, "adamw": ADAM_FORGET_LRS, "lion": decade_grid(1e-6, 1e-4)}
FAMILY_RETAIN_LRS = {"sgd": RETAIN_LRS, "adamw": (1e-4, 1e-3), "lion": (3e-5, 3e-4)}
#: ``--optim`` -> (forget optimizer family, retain optimizer family) of the paper's optimizer ablation
ABLATION_PAIRS = {"dual": ("adamw", "sgd"), "dual_sa": ("sgd", "adamw"), "dual_ss": ("sgd", "sgd"),
                  "dual_ls": ("lion", "sgd"), "dual_ll": ("lion", "lion"), "dual_sl": ("sgd", "lion"),
                  "dual_aa": ("adamw", "adamw"), "dual_aa_m": ("adamw", "adamw"), "dual_aa_v": ("adamw", "adamw"),
                  "dual_share": ("adamw", "sgd")}


def ablation_grids() -> Tuple[MethodGrid, ...]:
    """SFR-on with one SGD optimizer and with each optimizer pair of the paper's ablation (separate states,
    ``--optim dual_*``), each over the grids of its optimizers' families."""
    grids = [grid for grid in evidence_grids(("SFRon",)) if grid.optim == "sgd"]
    for optim, (forget, retain) in ABLATION_PAIRS.items():
        grids.append(MethodGrid("SFRon", optim, FAMILY_FORGET_LRS[forget], FAMILY_RETAIN_LRS[retain]))
    return tuple(grids)


def write_subset(source: str, out: Path, train_images: int, test_images: Optional[int] = None) -> Path:
    """A zip of ``train_images`` training images (the same number per class, ``RandomState(0)``) and
    ``test_images`` test images (all when None) of the ImageFolder zip/tree ``source``; file bytes copied."""
    target = out / "data" / f"{Path(source).stem}_train{train_images}_test{test_images or 'all'}.zip"
    if target.exists():
        return target
    tree = ImageTree(source, "--data", expect="train")
    rng = np.random.RandomState(0)
    with atomic_path(target) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as archive:
        for split, count in (("train", train_images), ("test", test_images)):
            by_class = tree.files_by_class(split)
            for cls in sorted(by_class):
                names = by_class[cls]
                if count is not None:
                    names = sorted(rng.choice(names, count // len(by_class), replace=False))
                for name in names:
                    archive.writestr(name, tree.read(name))
    return target


PRESETS: Dict[str, EvidenceConfig] = {
    # CIFAR-10 on 2 CPU cores (benchmarks/README.md): 5,000 training images (4,500 after the validation
    # hold-out; 450 forgotten) and 5,000 test images; without augmentation a ResNet-20s fits its training
    # set in 30 epochs. Unlearning at batch 16: 4 epochs = 116 forget + 1,016 retain steps; SFR-on 1,000
    # retain steps with a forget step every 5th (200). Five seeds (the paper's protocol): Retrain, the best
    # settings and their trajectories (per epoch; SFR-on every 200 retain steps) on each. sgd and dual first,
    # then the learning-rate-free recipes (#29).
    "cifar10": EvidenceConfig(
        out="runs/ic_evidence_cifar10", dataset="cifar10", data=str(SHARED_CIFAR10_ZIP), train_subset=5000,
        test_subset=5000, arch="resnet20s", num_forget=450, train_epochs=30, decreasing_lr="15,23",
        unlearn_epochs=4, sfron_iters=1000, seeds=(1, 2, 3, 4, 5), search_seed=1,
        grids=evidence_grids(("SalUn", "SFRon", "SCRUB")) + lr_free_grids(("SalUn", "SFRon", "SCRUB")),
        extra_flags=("--no-aug", "--amp", "--channels_last")),
    # the paper's optimizer-pair ablation (SFR-on) in the same setting (the same folder: the original, Retrain
    # and the sgd / dual runs are shared): 11 grids of 10 or 14 points + seeds
    "cifar10_ablation": EvidenceConfig(
        out="runs/ic_evidence_cifar10", dataset="cifar10", data=str(SHARED_CIFAR10_ZIP), train_subset=5000,
        test_subset=5000, arch="resnet20s", num_forget=450, train_epochs=30, decreasing_lr="15,23",
        unlearn_epochs=4, sfron_iters=1000, grids=ablation_grids(), seeds=(1, 2, 3, 4, 5), search_seed=1,
        extra_flags=("--no-aug", "--amp", "--channels_last")),
    # The paper's CIFAR-10 protocol on one GPU (benchmarks/paper_scale_gpu.sh): all 45,000 training images
    # (4,500 forgotten), ResNet-18 with the pipeline's augmentation, 182 training epochs (lr / 10 at 91 and
    # 136), unlearning 10 epochs at batch 256 (18 forget + 159 retain batches per epoch: 180 + 1,590 steps),
    # SFR-on 1,500 retain steps (300 forget), three seeds; the data resident on the GPU (--data_on_device).
    "paper_gpu": EvidenceConfig(
        out="runs/ic_paper_gpu", dataset="cifar10", data=str(SHARED_CIFAR10_ZIP), arch="resnet18", num_forget=4500,
        train_epochs=182, decreasing_lr="91,136", train_batch_size=256, unlearn_epochs=10, sfron_iters=1500,
        batch_size=256, grids=evidence_grids(("SalUn", "SFRon", "SCRUB")), seeds=(1, 2, 3), search_seed=1,
        device="cuda", extra_flags=("--amp", "--amp_dtype", "bfloat16", "--channels_last", "--data_on_device")),
    # the same pipeline shortened to a few minutes on one large GPU: it checks the CUDA path end to end and
    # measures images per second; its numbers are not evidence (the original does not converge in 10 epochs)
    "paper_gpu_short": EvidenceConfig(
        out="runs/ic_paper_gpu_short", dataset="cifar10", data=str(SHARED_CIFAR10_ZIP), arch="resnet18",
        num_forget=4500, train_epochs=10, decreasing_lr="5,8", train_batch_size=256, unlearn_epochs=2,
        sfron_iters=300, batch_size=256, seeds=(1,), search_seed=1, max_extensions=0, device="cuda",
        grids=tuple(MethodGrid(m, o, lrs, (1e-2,) if m != "SFRon" or o == "dual" else None)
                    for m in ("SalUn", "SFRon", "SCRUB")
                    for o, lrs in (("sgd", (1e-2, 1e-1)), ("dual", (1e-4, 1e-3)))),
        extra_flags=("--amp", "--amp_dtype", "bfloat16", "--channels_last", "--data_on_device")),
    # the README demo: digits (no download); the original fits its 1,169 + 130 training images in 16 epochs;
    # SalUn at batch 8 for 6 epochs = 102 forget + 882 retain steps; one retain lr (the benchmark searches it);
    # three seeds
    "demo": EvidenceConfig(
        out="demo_runs/ImageClassification", dataset="digits", arch="resnet20s", num_forget=130, train_epochs=16,
        decreasing_lr="8,12", unlearn_epochs=6, sfron_iters=500, batch_size=8, seeds=(1, 2, 3), search_seed=1,
        grids=(MethodGrid("SalUn", "sgd", SGD_FORGET_LRS, (1e-2,)),
               MethodGrid("SalUn", "dual", ADAM_FORGET_LRS, (1e-2,))),
        max_extensions=1, extra_flags=("--no-aug",)),
    # the demo's pipeline at test size (seconds): not a measurement
    "demo_quick": EvidenceConfig(
        out="demo_runs/ImageClassification", dataset="digits", arch="resnet20s", num_forget=130, train_epochs=2,
        decreasing_lr="1", unlearn_epochs=1, sfron_iters=10, batch_size=64, seeds=(1, 2), search_seed=1,
        grids=(MethodGrid("SalUn", "sgd", (1e-2, 1e-1), (1e-2,)), MethodGrid("SalUn", "dual", (1e-4, 1e-3), (1e-2,))),
        max_extensions=1, extra_flags=("--no-aug",)),
}




def script_call(script: str, argv: Sequence[str], save_dir: Path) -> Call:
    """A run of an image-classification entry script into ``save_dir``; ``--resume`` continues an interrupted
    run from its snapshot (every entry script writes ``run.json`` last)."""
    return Call(f"ImageClassification.{script}:main",
                tuple(argv) + ("--save_dir", str(save_dir), "--overwrite", "--resume"), save_dir)


def evaluate_model(argv: Sequence[str]) -> Dict[str, object]:
    """The model ``--model_path`` of ``argv`` (the benchmark's flags and a seed) on that seed's split: UA, RA,
    TA, MIA, its training-set accuracy and the sizes of the forget and retain sets."""
    return evaluate_models(argv, (None,))[0]


def evaluate_models(argv: Sequence[str], model_paths: Sequence[Optional[str]]) -> List[Dict[str, object]]:
    """:func:`evaluate_model` for each of ``model_paths`` (``None``: ``argv``'s own ``--model_path``) on the one
    split of ``argv``, loaded once. Each model is loaded right before its evaluation, which seeds everything with
    ``--train_seed``, so every model gets the same numbers as evaluated alone."""
    run = parse_config(list(argv) + ["--unlearn", "FT"])
    device = get_device(run.device, run.gpu)
    data = ic_data.load_unlearn_data(run, device=device)
    forget, retain = len(data.forget_index), len(data.retain_index)
    results = []
    for path in model_paths:
        model = load_original_model(run if path is None else replace(run, model_path=path), device)
        metrics = evaluate(model, ic_data.evaluation_loaders(data, run), device, run.mia)
        train_acc = (metrics["retain_acc"] * retain + metrics["forget_acc"] * forget) / (forget + retain)
        results.append({**{k: metrics[k] for k in METRICS}, "train_acc": train_acc, "forget_size": forget,
                        "retain_size": retain})
    return results


@dataclass(frozen=True)
class CheckpointEvaluation:
    """The checkpoints of a finished run to evaluate: ``argv`` (the benchmark's flags and the run's seed), the
    run's folder and its checkpoints as ``(progress, file name)``: epochs (``checkpoint_{e}.pt``) or SFR-on's
    retain steps (``checkpoint_step{s}.pt``)."""
    argv: Tuple[str, ...]
    run_dir: str
    checkpoints: Tuple[Tuple[int, str], ...]


TRAJECTORY = "trajectory.json"


def evaluate_checkpoints(spec: CheckpointEvaluation) -> None:
    """UA, RA, TA and MIA of each checkpoint of a run, written to ``<run_dir>/trajectory/trajectory.json`` as
    ``[{"progress": p, ...}, ...]``."""
    paths = [str(Path(spec.run_dir) / name) for _, name in spec.checkpoints]
    points = [{"progress": progress, **{k: metrics[k] for k in METRICS}}
              for (progress, _), metrics in zip(spec.checkpoints, evaluate_models(spec.argv, paths))]
    atomic_write_json(points, Path(spec.run_dir) / "trajectory" / TRAJECTORY)


class ICEvidence(Modality):
    """The image-classification modality of :func:`benchmarks.evidence.engine.run` for one :class:`EvidenceConfig`."""

    metrics = gap_metrics = stability_metrics = METRICS
    gap_label = "Avg Gap to Retrain (search seed)"
    progress = "unlearning epoch (SFR-on: its retain steps, rescaled)"

    def __init__(self, config: EvidenceConfig) -> None:
        self.config = config
        self.out = Path(config.out)
        self.common = ["--dataset", config.dataset, "--arch", config.arch, "--device", config.device,
                       "--num_indexes_to_replace", str(config.num_forget), "--mia", config.mia,
                       *config.extra_flags]
        # the last epoch's model, which fits the training set (the best-validation one may not yet)
        self.model_path = str(self.out / "original" / main_train.LAST)
        self.reference: Dict[str, float] = {}
        self.original: Dict[int, Dict[str, object]] = {}
        self.kinds: Dict[str, Tuple[str, str]] = {}  # run folder -> (method, optim)

    # -- data, original, Retrain, masks -------------------------------------------------------------

    def prepare_data(self) -> None:
        config = self.config
        if config.data:
            path = config.data
            if config.train_subset:
                path = str(write_subset(config.data, self.out, config.train_subset, config.test_subset))
            self.common += ["--data", path]

    def train_schedule(self) -> List[str]:
        return ["--decreasing_lr", self.config.decreasing_lr, "--batch_size", str(self.config.train_batch_size)]

    def train_original(self, runner: Runner) -> None:
        runner.run([script_call("main_train", self.common + [
            "--epochs", str(self.config.train_epochs), "--lr", str(self.config.train_lr)] + self.train_schedule(),
            self.out / "original")])

    def retrain(self, runner: Runner, seeds: Sequence[int]) -> Dict[int, Dict[str, float]]:
        """Retrain (the same schedule as the original, from scratch) on each seed's retain set."""
        calls = {seed: script_call("main_forget", self.common + [
            "--seed", str(seed), "--unlearn", "retrain", "--unlearn_epochs", str(self.config.train_epochs),
            "--unlearn_lr", str(self.config.train_lr)] + self.train_schedule(),
            self.out / f"retrain_sgd_lr{lr_text(self.config.train_lr)}" / f"seed{seed}") for seed in seeds}
        runner.run(list(calls.values()))
        return {seed: read_json(call.save_dir / "eval_result.json") for seed, call in calls.items()}

    def mask_path(self, seed: int) -> Path:
        return self.out / "mask" / f"seed{seed}" / f"with_{self.config.mask_ratio}.pt"

    def make_masks(self, runner: Runner, seeds: Sequence[int]) -> None:
        """SalUn's saliency mask of each seed's forget set (``generate_mask.py`` also ends with ``run.json``)."""
        runner.run([script_call("generate_mask", self.common + [
            "--seed", str(seed), "--model_path", self.model_path, "--batch_size", str(self.config.batch_size)],
            self.mask_path(seed).parent) for seed in seeds])

    def seed_argv(self, seed: int) -> List[str]:
        return self.common + ["--seed", str(seed), "--batch_size", str(self.config.batch_size)]

    def evaluate_original(self, seed: int) -> Dict[str, object]:
        """The original model on the seed's split (:func:`evaluate_model`)."""
        return evaluate_model(self.seed_argv(seed) + ["--model_path", self.model_path])

    def prepare(self, runner: Runner, log: Callable[[str], None]) -> Dict[str, object]:
        """The data, the original, Retrain on every seed, the masks and the original's metrics per seed."""
        config = self.config
        self.prepare_data()
        self.train_original(runner)
        log("original model trained")
        retrain = self.retrain(runner, config.seeds)
        log(f"Retrain done on seeds {list(config.seeds)}")
        if any("{mask}" in METHODS[grid.method].flags for grid in config.grids):
            self.make_masks(runner, config.seeds)
        self.original = {seed: self.evaluate_original(seed) for seed in config.seeds}
        # the original trained on the split of seed TRAIN_SPLIT_SEED; another seed's split moves some of
        # its validation images into the forget and retain sets (research code), so only that split's
        # accuracy is the original's accuracy on its training set
        split_seed = main_train.TRAIN_SPLIT_SEED
        train_acc = (self.original.get(split_seed) or self.evaluate_original(split_seed))["train_acc"]
        self.reference = {m: float(np.mean([retrain[s][m] for s in config.seeds])) for m in METRICS}
        sizes = self.original[config.search_seed]
        original_mean = {m: float(np.mean([self.original[s][m] for s in config.seeds])) for m in METRICS}
        return {"setting": check_setting(train_acc, retrain, config.thresholds),
                "step_budget": step_budget(config, sizes["forget_size"], sizes["retain_size"]),
                "reference": dict(self.reference), "retrain": {str(s): retrain[s] for s in config.seeds},
                "original": {str(s): self.original[s] for s in config.seeds},
                # doing nothing: what a method's best gap has to beat
                "original_gap": self.gap(original_mean)}

    # -- unlearning runs -------------------------------------------------------------------------

    def unlearn_call(self, method: str, optim: str, forget_lr: float, retain_lr: float, seed: int) -> Call:
        """One unlearning run (``retain_lr`` :data:`TIED`: the single optimizer at ``forget_lr``)."""
        config, spec = self.config, METHODS[method]
        tied = retain_lr == TIED
        name = run_name(MethodGrid(method, optim, (), None), forget_lr, retain_lr)
        budget = (["--unlearn_epochs", str(config.unlearn_epochs)] if spec.kind == "epochs"
                  else ["--sfron_iters", str(config.sfron_iters)]
                  + (["--sfron_checkpoint_every", str(self.sfron_every)] if config.stability else []))
        argv = self.seed_argv(seed) + [flag.format(mask=self.mask_path(seed)) for flag in spec.argv(optim)] + [
            "--optim", optim, "--unlearn_lr", str(forget_lr), "--retain_lr", str(forget_lr if tied else retain_lr),
            "--model_path", self.model_path] + budget
        self.kinds[f"{name}/seed{seed}"] = (method, optim)
        return script_call(spec.script, argv, self.out / name / f"seed{seed}")

    def read(self, call: Call) -> Dict[str, float]:
        result = read_json(call.save_dir / "eval_result.json")
        return {k: result[k] for k in METRICS}

    def gap(self, metrics: Mapping[str, float]) -> float:
        """parse_result's average gap: mean over UA, RA, TA, MIA of ``|metrics - Retrain's mean|``."""
        return float(np.mean([abs(metrics[k] - self.reference[k]) for k in METRICS]))

    @property
    def sfron_every(self) -> int:
        """SFR-on's checkpoint interval in retain steps (``--sfron_checkpoint_every``)."""
        return max(1, self.config.sfron_iters // self.config.sfron_points)

    def trajectory_call(self, method: str, optim: str, call: Call) -> Optional[Call]:
        """The evaluation of a run's checkpoints: every epoch, or every :attr:`sfron_every` retain steps of
        SFR-on. Progress is in epochs for both: SFR-on's steps as the fraction of its budget times the epoch
        methods' epochs, so one stability figure has one x axis."""
        argv = list(call.argument)
        seed = argv[argv.index("--seed") + 1]
        config = self.config
        if METHODS[method].kind == "epochs":
            checkpoints = tuple((e, f"checkpoint_{e}.pt") for e in range(1, config.unlearn_epochs + 1))
        else:
            steps = range(self.sfron_every, config.sfron_iters + 1, self.sfron_every)
            checkpoints = tuple((round(s * config.unlearn_epochs / config.sfron_iters, 3), sfron_checkpoint_name(s))
                                for s in steps)
        spec = CheckpointEvaluation(tuple(self.seed_argv(int(seed))), str(call.save_dir), checkpoints)
        return Call("benchmarks.evidence.ic:evaluate_checkpoints", spec, call.save_dir / "trajectory", TRAJECTORY)

    def read_trajectory(self, call: Call) -> List[Dict[str, float]]:
        """Epoch 0 (the original on the run's split), then each epoch's checkpoint."""
        seed = int(call.argument.argv[list(call.argument.argv).index("--seed") + 1])
        start = {"progress": 0, **{k: self.original[seed][k] for k in METRICS}}
        return [start] + read_json(call.save_dir / TRAJECTORY)

    # -- reporting -------------------------------------------------------------------------------------

    def images_per_second(self, results: Mapping[str, object]) -> Dict[str, float]:
        """Median over runs of training images per second of the whole entry call (data loading, Fisher or
        mask passes and the final evaluation included, so a lower bound on the unlearning loop's speed); a
        diverged run stopped before its budget and is left out."""
        budget = results["step_budget"]
        images = {"epochs": budget["unlearn_epochs"] * (budget["forget_set"] + budget["retain_set"]),
                  "steps": (budget["sfron_forget_steps"] + budget["sfron_retain_steps"]) * budget["batch_size"]}
        speeds: Dict[str, List[float]] = {}
        seconds = results["seconds"]
        for name, (method, optim) in self.kinds.items():
            if name in seconds and not (self.out / name / DIVERGED_FILE).exists():
                speeds.setdefault(f"{method}/{optim}", []).append(images[METHODS[method].kind] / seconds[name])
        return {kind: float(np.median(values)) for kind, values in speeds.items()}

    def finish(self, results: Dict[str, object]) -> None:
        results["images_per_second"] = self.images_per_second(results)

    def title(self, results: Mapping[str, object]) -> str:
        budget = results["step_budget"]
        return (f"{self.config.dataset} {self.config.arch}: forget {budget['forget_set']} / retain "
                f"{budget['retain_set']}, {budget['forget_steps']} forget + {budget['retain_steps']} retain "
                f"steps (SFR-on {budget['sfron_forget_steps']} + {budget['sfron_retain_steps']}), "
                f"search seed {self.config.search_seed}")


def step_budget(config: EvidenceConfig, forget: int, retain: int) -> Dict[str, int]:
    """Optimizer steps of one unlearning run: epoch methods make one step per forget batch and one per
    retain batch each epoch; SFR-on makes ``sfron_iters`` retain steps, one forget step per ``sfron_freq``."""
    batches = lambda n: -(-n // config.batch_size)  # noqa: E731
    sfron_freq = parse_config(["--unlearn", "SFRon"]).sfron_freq
    return {"forget_set": forget, "retain_set": retain, "batch_size": config.batch_size,
            "unlearn_epochs": config.unlearn_epochs, "forget_steps": config.unlearn_epochs * batches(forget),
            "retain_steps": config.unlearn_epochs * batches(retain), "sfron_iters": config.sfron_iters,
            "sfron_forget_steps": -(-config.sfron_iters // sfron_freq), "sfron_retain_steps": config.sfron_iters}


def check_setting(train_acc: float, retrain: Mapping[int, Mapping[str, float]],
                  thresholds: Mapping[str, float]) -> Dict[str, object]:
    """Whether the setting can discriminate: the original memorises its training set (``train_acc``, in
    percent), Retrain has not seen the forget set (on every seed its forget accuracy is near its test
    accuracy) and Retrain's MIA is stable over seeds (population std)."""
    forget_vs_test = max(abs((100.0 - r["UA"]) - r["TA"]) for r in retrain.values())
    mia = [r["MIA"] for r in retrain.values()]
    mia_std = float(np.std(mia))
    checks = {
        "original_train_acc": (train_acc, train_acc >= thresholds["original_train_acc"],
                               f"original's training-set accuracy {train_acc:.2f} (>= {thresholds['original_train_acc']})"),
        "retrain_forget_vs_test": (forget_vs_test, forget_vs_test <= thresholds["retrain_forget_vs_test"],
                                   f"Retrain's |forget acc - test acc| {forget_vs_test:.2f} "
                                   f"(<= {thresholds['retrain_forget_vs_test']})"),
        "retrain_mia_std": (mia_std, mia_std <= thresholds["retrain_mia_std"],
                            f"Retrain's MIA std over seeds {mia_std:.2f} (<= {thresholds['retrain_mia_std']})"),
    }
    return setting_checks(checks)




def report(results: Mapping[str, object]) -> str:
    """Everything a benchmark prints at its end (:func:`benchmarks.evidence.engine.report_text`)."""
    config, budget = results["config"], results["step_budget"]
    caption = (f"{config['dataset']}, {config['arch']}: forget {budget['forget_set']} / retain {budget['retain_set']} "
               f"images; per run {budget['forget_steps']} forget + {budget['retain_steps']} retain steps at batch "
               f"{budget['batch_size']} (SFR-on {budget['sfron_forget_steps']} + {budget['sfron_retain_steps']}); "
               f"grid searched on seed {config['search_seed']}, best setting on seeds {list(config['seeds'])}; "
               f"MIA: {config['mia']}")
    return report_text(ICEvidence, results, caption)
