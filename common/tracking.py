"""``--report_to none|tensorboard|wandb``: watch a training or unlearning run while it goes.

Every optimizer loop of the project (image classification's :class:`~ImageClassification.unlearn.engine.UnlearnRun`,
the LLM's :func:`~LLM.trainer.run_schedule`, the diffusion models' loops) reports each step to
:func:`current`, which is a no-op unless a script opened :func:`tracking` around its run. Every
``--logging_steps`` steps the tracker gets

* ``loss/<objective>``: the last loss of each objective (``forget``, ``retain``, or ``joint``);
* ``lr/forget`` and ``lr/retain``: the learning rate of each objective's next step;
* ``moments/<objective>/<buffer>``: the norm of each moment buffer (:func:`dualoptim.moment_norms`), the
  quantity behind the paper's argument that one state mixes the objectives' gradient statistics;
* ``estimate/<objective>/d``: the step size a learning-rate-free optimizer estimates for itself (Prodigy's
  :math:`d`, ``--optim dual_prodigy``, ``--optim_cfg dual_prodigy_adam``: :func:`dualoptim.step_size_estimates`);

and at the end the run's evaluation metrics (``eval/<name>``). TensorBoard event files go to
``<run folder>/tensorboard``; wandb writes to ``<run folder>/wandb`` and runs offline unless ``WANDB_MODE``
(or a logged-in API key) says otherwise, so a machine without network still records the run.
"""
from __future__ import annotations

import argparse
import contextlib
import contextvars
import importlib.util
import numbers
import os
from pathlib import Path
from typing import Any, Dict, Iterator, Mapping, Optional, Union

import torch

from common.errors import UsageError, positive_int
from dualoptim.optimizers import OBJECTIVES, moment_norms, step_size_estimates

REPORT_TO = ("none", "tensorboard", "wandb")


#: the package each tracker needs
TRACKER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb"}


def tracker_name(text: str) -> str:
    """``--report_to``'s type: a tracker whose package is installed, checked while the command line is read,
    so a run refused for a missing tracker has written nothing."""
    package = TRACKER_PACKAGES.get(text)
    if package is not None:
        try:
            found = importlib.util.find_spec(package) is not None
        except (ImportError, ValueError):  # a module blocked in sys.modules has no spec
            found = False
        if not found:
            raise argparse.ArgumentTypeError(f"{text} needs the {package} package (pip install {package})")
    return text


def add_report_args(parser: argparse.ArgumentParser) -> None:
    """``--report_to`` and ``--logging_steps``."""
    parser.add_argument("--report_to", type=tracker_name, default="none", choices=REPORT_TO,
                        help="also log losses, learning rates, moment norms and final metrics to TensorBoard "
                             "(<run folder>/tensorboard) or wandb (offline without network)")
    parser.add_argument("--logging_steps", type=positive_int, default=10,
                        help="with --report_to: log every this many optimizer steps")


class Tracker:
    """Where scalars go; this base class drops them (``--report_to none``)."""

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoardTracker(Tracker):
    """Event files in ``log_dir``, opened at the first scalars: a run refused before its first step (a
    method's own checks run inside :func:`tracking`) leaves no folder behind."""

    def __init__(self, log_dir: Path, config: Mapping[str, Any]) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UsageError("--report_to tensorboard: needs the tensorboard package (pip install tensorboard)") \
                from None
        self.log_dir, self.config, self.open_writer, self.writer = log_dir, config, SummaryWriter, None

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        if self.writer is None:
            self.writer = self.open_writer(log_dir=str(self.log_dir))
            self.writer.add_text("config", "\n".join(f"    {k}: {v}" for k, v in sorted(self.config.items())))
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class WandbTracker(Tracker):
    """A wandb run in ``log_dir``, started at the first scalars (as :class:`TensorBoardTracker`)."""

    def __init__(self, log_dir: Path, config: Mapping[str, Any]) -> None:
        try:
            import wandb
        except ImportError:
            raise UsageError("--report_to wandb: needs the wandb package (pip install wandb)") from None
        if "WANDB_MODE" not in os.environ and not os.environ.get("WANDB_API_KEY"):
            os.environ["WANDB_MODE"] = "offline"  # a machine without network still records the run
        self.log_dir, self.config, self.wandb, self.run = log_dir, config, wandb, None

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        if self.run is None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            self.run = self.wandb.init(project=os.environ.get("WANDB_PROJECT", "dualoptim"), dir=str(self.log_dir),
                                       config=dict(self.config))
        self.run.log(dict(values), step=step)

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()


class StepReporter:
    """What the loops call: :meth:`step` after every optimizer step, :meth:`metrics` with the final metrics."""

    def __init__(self, tracker: Tracker, every: int) -> None:
        self.tracker, self.every = tracker, every
        self.losses: Dict[str, float] = {}
        self.last_step = 0

    @property
    def active(self) -> bool:
        return type(self.tracker) is not Tracker

    def step(self, losses: Mapping[str, Any], optimizer: Any, step: Optional[int] = None) -> None:
        """Record an optimizer step and its ``losses`` (objective -> a float or a tensor); ``step``: its number
        (default: the steps reported so far plus one). Every ``every`` steps, log the objectives' last losses,
        the learning rate of each objective, the moment norms of ``optimizer`` and the step sizes it estimates."""
        if not self.active:
            return
        self.losses.update({objective: float(loss.detach() if torch.is_tensor(loss) else loss)
                            for objective, loss in losses.items()})
        step = self.last_step + 1 if step is None else step
        self.last_step = step
        if step % self.every:
            return
        values = {f"loss/{name}": value for name, value in self.losses.items()}
        values.update({f"lr/{name}": rate for name, rate in objective_lrs(optimizer).items()})
        values.update({f"moments/{key}": norm for key, norm in moment_norms(optimizer).items()})
        values.update({f"estimate/{key}": value for key, value in step_size_estimates(optimizer).items()})
        self.tracker.scalars(step, values)

    def metrics(self, metrics: Mapping[str, Any]) -> None:
        """The run's numeric evaluation metrics, as ``eval/<name>`` at the last step."""
        if self.active:
            numeric = {f"eval/{key}": float(value) for key, value in metrics.items()
                       if isinstance(value, numbers.Real) and not isinstance(value, bool)}
            self.tracker.scalars(self.last_step, numeric)


def objective_lrs(optimizer: Any) -> Dict[str, float]:
    """The learning rate of each objective's next step: a DualOptim-like object says it (``lr(objective)``); a
    :class:`~dualoptim.DecoupledAdamW` (also wrapped by accelerate) runs forget steps at ``forget_lr_ratio``
    times its lr; any other optimizer runs both at its lr."""
    if hasattr(optimizer, "lr") and callable(optimizer.lr):
        return {name: optimizer.lr(name) for name in OBJECTIVES}
    group = optimizer.param_groups[0]
    return {"forget": group["lr"] * group.get("forget_lr_ratio", 1.0), "retain": group["lr"]}


_CURRENT: contextvars.ContextVar[StepReporter] = contextvars.ContextVar("reporter", default=StepReporter(Tracker(), 1))


def current() -> StepReporter:
    """The reporter of the run in progress (a no-op outside :func:`tracking`)."""
    return _CURRENT.get()


@contextlib.contextmanager
def tracking(args: Union[argparse.Namespace, Mapping[str, Any]], run_dir: Optional[os.PathLike],
             enabled: bool = True, folder: Optional[str] = None) -> Iterator[StepReporter]:
    """Open ``--report_to``'s tracker in ``<run_dir>/<folder>`` (default folder: the tracker's name) for the
    run inside the block (``enabled``: False on the processes of a launch other than the main one); the loops
    find it with :func:`current`.  ``args``: the parsed flags, or a run's record of them (as
    :func:`common.io.run_record` takes)."""
    settings = vars(args) if isinstance(args, argparse.Namespace) else dict(args)
    kind = settings["report_to"] if enabled else "none"
    if kind != "none" and run_dir is None:
        raise UsageError(f"--report_to {kind}: needs the run's output folder (--save_dir)")
    config = {key: value for key, value in settings.items() if isinstance(value, (str, int, float, bool))}
    tracker = {"none": Tracker, "tensorboard": TensorBoardTracker, "wandb": WandbTracker}[kind]
    instance = tracker() if kind == "none" else tracker(Path(run_dir) / (folder or kind), config)
    reporter = StepReporter(instance, settings["logging_steps"])
    token = _CURRENT.set(reporter)
    try:
        yield reporter
    finally:
        _CURRENT.reset(token)
        instance.close()
