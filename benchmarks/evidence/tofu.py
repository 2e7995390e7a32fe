"""The TOFU modality of the evidence engine: a small Llama trained from scratch, then unlearned.

What :func:`benchmarks.evidence.engine.run` needs for ``benchmarks/llm_tofu.py --size evidence`` (the same
preparation serves the script's table mode):

1. **the reference runs** (:class:`Prepared`): a TOFU folder of forget10 task 1 and its complement, a
   tokenizer and a Llama initialised from scratch, ``main_train.py`` fine-tuning the "original" model on
   forget + retain and the "retain" model on the retain rows only (it plays Retrain's part), and
   ``eval.py`` on both;
2. **the method table** :data:`METHODS` (each forget loss with its ``--forget_coeff``, as in the research
   code's scripts) and **one unlearning setting** (:func:`unlearn_and_evaluate`): ``main_forget.py`` with the
   alternating schedule, then ``eval.py`` on its model, finished once ``metrics.json`` exists;
3. **the gap** (:func:`tofu_gap`): 100 x mean of ``|forget ROUGE-L - retain model's|`` and
   ``|TOFU model utility - retain model's|``, in points.

4. **the trajectory** of a best setting's run (:func:`record_trajectory`): ``main_forget.py`` keeps only its
   last model and the benchmark deletes it once evaluated, so the run is made again (the same flags: on CPU
   the same numbers) with ``--save_steps`` every :data:`TRAJECTORY_POINTS`-th of its forget steps, each
   checkpoint evaluated with ``eval.py`` and deleted; the last point is checked against the finished run's
   metrics. The x axis is forget steps (an alternating run's retain steps come between them; a joint step
   has one forget batch), so both schedules share one axis; the start is the original model.
"""
from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np

from benchmarks.evidence.design import TIED, TRAJECTORY_POINTS, MethodGrid, decade_grid, rerun_check, setting_checks
from benchmarks.evidence.engine import Method, Modality, report_text
from common.errors import UsageError
from common.evidence_runs import Call, Runner
from common.io import atomic_write_json, ensure_writable_dir, read_json
from dualoptim.recipes import LR_FREE_DEFAULT_LR
from LLM import eval as eval_script
from LLM import main_forget, main_train
from LLM.data import TofuSource, filter_task
from LLM.schedule import steps_per_epoch
from LLM.tiny import build_tiny_llama

#: forget loss -> ``main_forget.py`` flags (``--forget_coeff`` as in the original's scripts); every loss runs
#: the alternating schedule
METHODS = {loss: Method("main_forget", ("--forget_loss", loss, "--forget_coeff", coeff), "alternate")
           for loss, coeff in (("ME+GD", "0.1"), ("IDK+AP", "1.0"), ("NPO+GD", "0.1"))}
GAP_KEYS = ("Forget ROUGE", "TOFU Model Utility")
METRICS = (*GAP_KEYS, "Forget Quality")
#: optimizer family -> its ``main_forget.py`` flags: one AdamW state, or DualOptim's two sets of moments on
#: the alternating schedule (``--retain_freq`` retain steps per forget step) or on joint steps whose forget
#: and retain gradients update their own moments (``--schedule joint``, one step per forget batch)
OPTIM_FLAGS = {"adam": ("--optim_cfg", "adam", "--alternate"),
               "dual_adam": ("--optim_cfg", "dual_adam", "--alternate"),
               "dual_adam_joint": ("--optim_cfg", "dual_adam", "--schedule", "joint"),
               # learning-rate-free forget optimizers (#29), AdamW retain, alternating as dual_adam
               "dual_prodigy_adam": ("--optim_cfg", "dual_prodigy_adam", "--alternate"),
               "dual_sf_adam": ("--optim_cfg", "dual_sf_adam", "--alternate")}
OPTIMS = tuple(OPTIM_FLAGS)
EVAL_FILES = ("real_authors_perturbed", "world_facts_perturbed")
RESULT = "metrics.json"


def write_subset(source: TofuSource, folder: Path, args: argparse.Namespace) -> List[str]:
    """The benchmark's TOFU folder (Hugging Face layout: forget10 pairs with retain90); returns its texts."""
    forget = filter_task(source.load("forget10"), 1)[:args.num_forget]
    keep = {row["question"] for row in forget}
    perturbed = [row for row in source.load("forget10_perturbed", ("question", "answer", "paraphrased_answer",
                                                                   "perturbed_answer")) if row["question"] in keep]
    retain_eval = source.load("retain_perturbed")[:args.num_eval]
    evaluated = {row["question"] for row in retain_eval}
    retain_all = source.load("retain90")
    # The evaluated retain questions first, so utility measures knowledge the models were trained on.
    retain = ([r for r in retain_all if r["question"] in evaluated]
              + [r for r in retain_all if r["question"] not in evaluated])[:args.num_retain]
    sets = {"forget10": forget, "retain90": retain,
            "forget10_perturbed": [{k: r[k] for k in ("question", "answer", "paraphrased_answer",
                                                      "perturbed_answer")} for r in perturbed],
            "retain_perturbed": retain_eval}
    for name in EVAL_FILES:
        sets[name] = source.load(name, ("question", "answer", "perturbed_answer"))[:args.num_eval]
        # A model trained from scratch knows no real authors or world facts: they join the retain data
        # (the stand-in for pre-training knowledge), so model utility is not zero by construction.
        sets["retain90"] = sets["retain90"] + sets[name]
    sets["forget10"] = [{"question": r["question"], "answer": r["answer"]} for r in sets["forget10"]]
    sets["retain90"] = [{"question": r["question"], "answer": r["answer"]} for r in sets["retain90"]]
    sets["full"] = sets["forget10"] + sets["retain90"]
    folder.mkdir(parents=True, exist_ok=True)
    texts = []
    for name, rows in sets.items():
        (folder / f"{name}.json").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
        texts += [" ".join(str(v) for v in row.values()) for row in rows]
    idk = Path(source.data_path) / "idontknow.jsonl"
    if not idk.is_file():
        raise UsageError(f"--data_path {source.data_path}: no idontknow.jsonl (needed by IDK+AP)")
    shutil.copyfile(idk, folder / "idontknow.jsonl")
    return texts + idk.read_text(encoding="utf-8").splitlines() + ["Question: Answer:"]



def saved_evaluation(save_dir: Path) -> Optional[dict]:
    """The summary an ``eval.py`` run saved in ``save_dir`` (its ``run.json`` is written last), if any."""
    record = save_dir / "run.json"
    return json.loads(record.read_text(encoding="utf-8"))["metrics"] if record.is_file() else None





@dataclass(frozen=True)
class TofuRun:
    """One unlearning run: ``main_forget.py`` with ``forget_argv`` into ``save_dir``, then ``eval.py`` on its
    model with ``eval_argv``."""
    forget_argv: Tuple[str, ...]
    eval_argv: Tuple[str, ...]
    save_dir: str


def unlearn_and_evaluate(run: TofuRun) -> None:
    """Unlearn, evaluate the unlearned model (then delete it: the evaluation is what the benchmark keeps, the
    weights are large) and write ``<save_dir>/metrics.json``: ``eval.py``'s summary and the unlearning
    loop's tokens per second."""
    save = Path(run.save_dir)
    result = main_forget.main(list(run.forget_argv))[-1]
    checkpoint = save / "1" / "unlearn_times_1" / "checkpoint-last"
    summary = eval_script.main(["--model_path", str(checkpoint), "--save_dir", str(save / "eval"),
                                *run.eval_argv])
    shutil.rmtree(checkpoint)
    atomic_write_json(dict(summary, tokens_per_second=result["tokens_per_second"]), save / RESULT)


TRAJECTORY = "trajectory.json"


@dataclass(frozen=True)
class TofuTrajectory:
    """The best-setting run ``run`` to make again with a checkpoint every ``points``-th of its forget steps."""
    run: TofuRun
    points: int = TRAJECTORY_POINTS


def forget_steps_done(step: int, alternate: bool, forget_freq: int, retain_freq: int) -> int:
    """Forget steps among the first ``step`` optimizer steps: every step of a joint run (one forget batch each);
    under the alternating schedule ``forget_freq`` of each cycle of ``forget_freq + retain_freq``, first."""
    if not alternate:
        return step
    cycle = forget_freq + retain_freq
    return step // cycle * forget_freq + min(step % cycle, forget_freq)


def trajectory_interval(max_steps: int, alternate: bool, forget_freq: int, retain_freq: int, points: int) -> int:
    """Optimizer steps between the trajectory's checkpoints: whole cycles of the schedule (a point falls after a
    cycle's retain steps), about ``max_steps / points``, at least one cycle."""
    cycle = forget_freq + retain_freq if alternate else 1
    return max(1, round(max_steps / cycle / points)) * cycle


def record_trajectory(spec: TofuTrajectory) -> None:
    """Make the finished run ``spec.run`` again into ``<save_dir>/trajectory`` with ``--save_steps``, evaluate
    each ``checkpoint-<step>`` and ``checkpoint-last`` with the run's ``eval.py`` flags (then delete them), and
    write ``trajectory/trajectory.json``: ``points`` (``progress``, the forget steps done, and the metrics at
    each), ``interval_steps``, and whether the last point equals the finished run's ``metrics.json``
    (``matches_finished_run``, with the largest absolute difference over :data:`METRICS`)."""
    run = Path(spec.run.save_dir)
    out = run / "trajectory"
    finished = read_json(run / "1" / "unlearn_times_1" / "run.json")
    flags, max_steps = finished["config"], finished["metrics"]["max_steps"]
    schedule = (flags["alternate"], flags["forget_freq"], flags["retain_freq"])
    interval = trajectory_interval(max_steps, *schedule, spec.points)
    argv = list(spec.run.forget_argv)
    argv[argv.index("--save_dir") + 1] = str(out)
    main_forget.main(argv + ["--save_steps", str(interval)])
    task = out / "1" / "unlearn_times_1"
    points = []
    for step in [*range(interval, max_steps, interval), max_steps]:
        checkpoint = task / (f"checkpoint-{step}" if step < max_steps else "checkpoint-last")
        summary = eval_script.main(["--model_path", str(checkpoint), "--save_dir", str(out / f"eval-{step}"),
                                    *spec.run.eval_argv])
        shutil.rmtree(checkpoint)
        points.append({"progress": forget_steps_done(step, *schedule), "step": step,
                       **{key: summary[key] for key in METRICS if key in summary}})
    atomic_write_json({"points": points, "interval_steps": interval, "max_steps": max_steps,
                       **rerun_check(points[-1], read_json(run / RESULT), METRICS)}, out / TRAJECTORY)


class Prepared:
    """The benchmark's data folder, fine-tuned models and the retain model's evaluation; with ``fine_tune``
    False (a dry run) only the paths the unlearning calls name, and nothing is written."""

    def __init__(self, args: argparse.Namespace, fine_tune: bool = True) -> None:
        source = TofuSource(args.data_path)
        if not source.local:
            raise UsageError(f"--data_path {args.data_path}: expected a local TOFU folder")
        self.out = ensure_writable_dir(args.out_dir, "--out_dir") if fine_tune else Path(args.out_dir)
        data_dir = self.out / "data"
        self.common = ["--device", "cpu", "--max_length", str(args.max_length)]
        self.data = ["--data_path", str(data_dir)]
        self.evaluate = ["--split", "forget10", "--task_id", "1", "--ds_size", "0", "--max_new_tokens",
                         str(args.max_new_tokens), "--batch_size", "20", "--device", "cpu"]
        self.models = {name: self.out / "ft" / name for name in ("original", "retain")}
        self.retain_eval = self.out / "ft" / "retain_eval"
        self.original_eval = self.out / "ft" / "original_eval"
        if not fine_tune:
            return
        texts = write_subset(source, data_dir, args)
        base = build_tiny_llama(self.out / "scratch", texts, hidden_size=args.hidden_size,
                                num_layers=args.num_layers, vocab_size=args.vocab_size, seed=0)
        for name, split in (("original", "full"), ("retain", "retain90")):
            if (self.models[name] / "run.json").is_file():  # fine-tuned by an earlier invocation
                continue
            main_train.main(["--model_path", str(base), "--split", split, "--lr", str(args.ft_lr), "--num_epochs",
                             str(args.ft_epochs), "--batch_size", str(args.ft_batch_size),
                             "--gradient_accumulation_steps", "1", "--weight_decay", "0", "--seed", "0",
                             "--save_dir", str(self.models[name])] + self.data + self.common)
        self.retain = self.evaluated(self.models["retain"], self.retain_eval, retain_result=False)
        self.original = self.evaluated(self.models["original"], self.original_eval)

    @property
    def evaluated_before(self) -> bool:
        """Whether an earlier invocation fine-tuned and evaluated both models."""
        return all(saved_evaluation(folder) is not None for folder in (self.retain_eval, self.original_eval))

    def evaluated(self, model: Path, save_dir: Path, retain_result: bool = True) -> dict:
        """``eval.py``'s summary of ``model`` (forget quality against the retain model's statistics), or the
        one an earlier invocation saved in ``save_dir``."""
        saved = saved_evaluation(save_dir)
        if saved is not None:
            return saved
        reference = ["--retain_result", str(self.retain_eval)] if retain_result else []
        return eval_script.main(["--model_path", str(model), "--save_dir", str(save_dir)] + reference
                                + self.data + self.evaluate)

    def unlearn_call(self, args: argparse.Namespace, loss: str, optim: str, lr: float, forget_lr: float, seed: int,
                     save: Path) -> Call:
        """The run of ``loss`` under ``optim`` (retain lr ``lr``, forget lr ``forget_lr``) into ``save``."""
        forget = ["--model_path", str(self.models["original"]), "--split", "forget10", "--task_list", "1",
                  *METHODS[loss].argv(optim), *OPTIM_FLAGS[optim],
                  "--retain_freq", str(args.retain_freq), "--lr", str(lr), "--forget_lr", str(forget_lr),
                  "--num_epochs", str(args.epochs), "--batch_size", str(args.batch_size),
                  "--gradient_accumulation_steps", "1", "--seed", str(seed), "--save_dir", str(save), "--overwrite",
                  *self.data, *self.common]
        evaluate = ["--retain_result", str(self.retain_eval), *self.data, *self.evaluate]
        return Call("benchmarks.evidence.tofu:unlearn_and_evaluate", TofuRun(tuple(forget), tuple(evaluate), str(save)),
                    save, RESULT)

    def unlearn(self, args: argparse.Namespace, loss: str, optim: str, lr: float, forget_lr: float, seed: int,
                save: Path) -> dict:
        """:meth:`unlearn_call` run in this process (a run that finished earlier is read back)."""
        call = self.unlearn_call(args, loss, optim, lr, forget_lr, seed, save)
        if not call.done:
            unlearn_and_evaluate(call.argument)
        return read_json(save / RESULT)


def tofu_gap(summary: Mapping[str, float], retain: Mapping[str, float]) -> float:
    """Distance to the retain model, in points: 100 x mean of |forget ROUGE-L - retain model's| and
    |TOFU model utility - retain model's| (the retain model plays Retrain's part)."""
    return 100.0 * float(np.mean([abs(summary[key] - retain[key]) for key in GAP_KEYS]))




def evidence_grids(args: argparse.Namespace) -> List[MethodGrid]:
    """Per loss, each of ``--optims``: ``adam`` (one AdamW state at ``--lr`` for both objectives: a tied grid),
    ``dual_adam`` / ``dual_adam_joint`` (forget lr x each ``--retain_lrs``), every forget axis from
    ``--grid_low`` to ``--grid_high`` at ``--points_per_decade``; then, for each of ``--lrfree_losses``, each
    learning-rate-free recipe of ``--optims`` over 0.1x to 10x its package default (the same resolution) x each
    ``--retain_lrs``, its default also run on every seed (no search)."""
    forget_lrs = decade_grid(args.grid_low, args.grid_high, args.points_per_decade)
    grids = [MethodGrid(loss, optim, forget_lrs, None if optim == "adam" else tuple(args.retain_lrs))
             for loss in METHODS for optim in args.optims if optim not in LR_FREE_DEFAULT_LR]
    for optim in (o for o in args.optims if o in LR_FREE_DEFAULT_LR):
        default = LR_FREE_DEFAULT_LR[optim]
        grids += [MethodGrid(loss, optim, decade_grid(default / 10, default * 10, args.points_per_decade),
                             tuple(args.retain_lrs), default_lr=default) for loss in args.lrfree_losses]
    return grids


@dataclass(frozen=True)
class TofuEvidenceConfig:
    """The engine's part of an evidence run (the sizes are the script's flags, recorded as ``args``)."""
    out: str
    grids: Tuple[MethodGrid, ...]
    seeds: Tuple[int, ...]
    search_seed: int
    max_extensions: int
    stability: bool = True      # the best settings' runs made again with checkpoints (record_trajectory)


class TofuEvidence(Modality):
    """The TOFU modality of :func:`benchmarks.evidence.engine.run`: the flags of ``llm_tofu.py`` as ``args``."""

    metrics = METRICS
    gap_metrics = stability_metrics = GAP_KEYS
    reference_name = "the retain model"
    gap_label = "gap to the retain model (search seed)"
    label = "loss"
    cell = ".3g"
    progress = "forget step"

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.config = TofuEvidenceConfig(str(Path(args.out_dir) / "evidence"), tuple(evidence_grids(args)),
                                         tuple(args.seeds), args.seeds[0], args.max_extensions, args.stability)
        self.prepared: Optional[Prepared] = None
        self.retain: Dict[str, float] = {}

    def step_budget(self) -> Dict[str, int]:
        """The alternating schedule (forget_freq 1): each cycle is one forget step and retain_freq retain steps;
        ``dual_adam_joint`` takes ``joint_steps`` steps of one forget and one retain batch each."""
        args = self.args
        per_epoch = steps_per_epoch(args.num_forget, args.num_retain, args.batch_size, 1, 1, True, 1, args.retain_freq)
        forget_steps = args.epochs * per_epoch // (1 + args.retain_freq)
        joint_steps = args.epochs * steps_per_epoch(args.num_forget, args.num_retain, args.batch_size, 1, 1, False)
        return {"forget_steps": forget_steps, "retain_steps": forget_steps * args.retain_freq,
                "joint_steps": joint_steps, "batch_size": args.batch_size, "epochs": args.epochs}

    def prepare(self, runner: Runner, log: Callable[[str], None]) -> Dict[str, object]:
        """The reference models, fine-tuned and evaluated in this process (not as launcher jobs: the search
        needs the retain model's metrics). A ``--dry_run`` before they exist fine-tunes nothing: it says so and
        goes on to print the search's first jobs, which name the models' paths only (it ends there, so the
        record it returns is never read)."""
        if getattr(self.args, "dry_run", False):
            self.prepared = Prepared(self.args, fine_tune=False)
            if not self.prepared.evaluated_before:
                log("dry run: the original and retain models would be fine-tuned and evaluated in this process "
                    f"(under {self.prepared.out / 'ft'}) before the search; the search's first jobs follow")
                return {"setting": setting_checks({})}
        self.prepared = Prepared(self.args)
        self.retain = self.prepared.retain
        log("original and retain models fine-tuned and evaluated")
        return {"args": vars(self.args), "setting": setting_checks({}), "step_budget": self.step_budget(),
                "reference": {key: self.retain[key] for key in GAP_KEYS}, "retain": self.retain,
                "original": self.prepared.original, "original_gap": self.gap(self.prepared.original),
                "gap": "100 x mean(|Forget ROUGE - retain's|, |TOFU Model Utility - retain's|)"}

    def unlearn_call(self, method: str, optim: str, forget_lr: float, retain_lr: float, seed: int) -> Call:
        lr = forget_lr if retain_lr == TIED else retain_lr
        save = Path(self.config.out) / method / optim / f"lr{lr:g}_flr{forget_lr:g}" / f"seed{seed}"
        return self.prepared.unlearn_call(self.args, method, optim, lr, forget_lr, seed, save)

    def read(self, call: Call) -> Dict[str, float]:
        return read_json(call.save_dir / RESULT)

    def gap(self, metrics: Mapping[str, float]) -> float:
        return tofu_gap(metrics, self.retain)

    def trajectory_call(self, method: str, optim: str, call: Call) -> Call:
        """The best setting's run ``call`` made again with checkpoints (:func:`record_trajectory`)."""
        return Call("benchmarks.evidence.tofu:record_trajectory", TofuTrajectory(call.argument),
                    call.save_dir / "trajectory", TRAJECTORY)

    def read_trajectory(self, call: Call) -> List[Dict[str, float]]:
        """Forget step 0 (the original model: the same on every seed, which orders the batches only), then
        each checkpoint."""
        start = {"progress": 0, **{key: self.prepared.original[key] for key in METRICS}}
        return [start] + read_json(call.save_dir / TRAJECTORY)["points"]

    def title(self, results: Mapping[str, object]) -> str:
        args, budget = self.args, results["step_budget"]
        return (f"TOFU forget10 task 1, Llama {args.num_layers}x{args.hidden_size}: {budget['forget_steps']} forget + "
                f"{budget['retain_steps']} retain steps per run, search seed {args.seeds[0]}")


def report(results: Mapping[str, object]) -> str:
    """The evidence tables and their reading (:func:`benchmarks.evidence.engine.report_text`)."""
    args, budget = results["args"], results["step_budget"]
    caption = (f"TOFU forget10 task 1 ({args['num_forget']} forget / {args['num_retain']} retain rows), Llama "
               f"{args['num_layers']}x{args['hidden_size']} from scratch; per run {budget['forget_steps']} forget + "
               f"{budget['retain_steps']} retain steps at batch {budget['batch_size']}"
               + (f" (dual_adam_joint: {budget['joint_steps']} joint steps of one forget and one retain batch)"
                  if "dual_adam_joint" in args.get("optims", ()) else "")
               + f"; grid searched on seed "
               f"{args['seeds'][0]}, best setting on seeds {args['seeds']}; gap = {results['gap']}")
    return report_text(TofuEvidence, results, caption)
