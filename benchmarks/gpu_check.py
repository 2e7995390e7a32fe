"""One-command self-check of every CUDA path on small settings: one JSON report and a PASS/FAIL line per check.

    bash benchmarks/gpu_check.sh                      # every check on cuda (about 2-5 minutes on one GPU)
    bash benchmarks/gpu_check.sh --device cpu --quick # the smoke test the suite runs (one check per family)

Checks (each runs the entry scripts in this process, on models and data built on the fly -- no download):

* ``ic/<method>/<optim>/<precision>``: SalUn (``main_random.py`` RL + a ``generate_mask.py`` mask), SFR-on
  (``main_random_sfron.py``) and SCRUB (``main_forget.py``), each with ``--optim sgd`` and ``dual``, under
  ``--amp --amp_dtype float16`` (GradScaler) and ``--amp --amp_dtype bfloat16 --channels_last``, on digits
  with an untrained ResNet-20s; the saved weights must be float32 and the accuracies finite.
* ``llm/<recipe>``: TOFU-layout unlearning of a tiny Llama with ``--dtype bfloat16`` (float32 master weights,
  bf16 autocast): ``dual_adam``; ``dual_adam_8bit`` when bitsandbytes steps on the device; with
  FlashAttention-2 when ``flash-attn`` is installed (CUDA only).
* ``ddpm/forget+sample`` and ``dit/forget+sample``: a short ``--dual --amp`` forgetting run and sampling.
* ``determinism/ic`` and ``determinism/llm``: the same seed twice (``--deterministic``) gives equal numbers.
* ``accelerate/2-process``: ``accelerate launch`` of 2 LLM processes, when 2 or more GPUs are present.

Every check reports its seconds, a throughput (images/s or tokens/s) and the peak GPU memory it
allocated.  A precision or device the machine cannot run is a FAIL with the entry script's one-line error
(naming the flag), never a silent fallback; a check the machine lacks the hardware or package for is a
SKIP with the reason.  Exit status 1 when any check failed.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import platform
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere: the research folders import from the checkout
    sys.path.insert(0, str(REPO))

from common.device import get_device  # noqa: E402
from common.errors import ArgumentParser, UsageError, cli_main  # noqa: E402
from common.io import atomic_write_json, read_json  # noqa: E402

IC_COMMON = ["--dataset", "digits", "--input_size", "8", "--arch", "resnet20s", "--batch_size", "64",
             "--num_indexes_to_replace", "60", "--unlearn_epochs", "1", "--print_freq", "1000"]
# bfloat16 first: the --quick smoke test runs it (CPU float16 convolutions are about 10x slower than float32)
IC_PRECISIONS = {"amp-bfloat16-channels_last": ["--amp", "--amp_dtype", "bfloat16", "--channels_last"],
                 "amp-float16": ["--amp", "--amp_dtype", "float16"]}
IC_METHODS = {"SalUn": ("main_random", ["--unlearn", "RL", "--unlearn_lr", "1e-3", "--retain_lr", "1e-2"]),
              "SFRon": ("main_random_sfron", ["--unlearn", "SFRon", "--sfron_iters", "4", "--unlearn_lr", "1e-3"]),
              "SCRUB": ("main_forget", ["--unlearn", "SCRUB", "--unlearn_lr", "1e-3", "--retain_lr", "1e-2"])}


class Skip(Exception):
    """The machine lacks what a check needs (a second GPU, a package): reported as SKIP with the reason."""


@dataclass
class Check:
    name: str
    run: Callable[[], Dict[str, object]]
    family: str


@dataclass
class Outcome:
    name: str
    status: str
    seconds: float
    metrics: Dict[str, object] = field(default_factory=dict)
    message: str = ""
    peak_gpu_mb: Optional[float] = None

    def line(self) -> str:
        rate = next((f"{self.metrics[k]:.3g} {k.replace('_per_second', '/s')}" for k in
                     ("images_per_second", "tokens_per_second", "steps_per_second") if k in self.metrics), "")
        peak = f"peak {self.peak_gpu_mb:.0f} MB" if self.peak_gpu_mb is not None else ""
        parts = [f"{self.status:4s} {self.name}", f"{self.seconds:6.1f} s", rate, peak, self.message]
        return "  ".join(part for part in parts if part)


class Setup:
    """The tiny models and data, built once into ``root`` when a check first needs them."""

    def __init__(self, root: Path, device: str) -> None:
        self.root, self.device = root, device
        self._cache: Dict[str, Path] = {}

    def _once(self, key: str, build: Callable[[Path], Path]) -> Path:
        if key not in self._cache:
            self._cache[key] = build(self.root / key)
        return self._cache[key]

    def ic_model(self) -> Path:
        from ImageClassification.models import save_untrained_digits_model
        return self._once("ic_model", lambda p: save_untrained_digits_model(p / "0model_SA_best.pth.tar"))

    def ic_mask(self) -> Path:
        def build(folder: Path) -> Path:
            from ImageClassification import generate_mask
            generate_mask.main(IC_COMMON + ["--model_path", str(self.ic_model()), "--save_dir", str(folder),
                                            "--device", self.device])
            return folder / "with_0.5.pt"
        return self._once("ic_mask", build)

    def tofu(self) -> Path:
        from LLM.tiny import make_tofu
        return self._once("tofu", make_tofu)

    def llama(self) -> Path:
        from LLM.tiny import build_tiny_llama, corpus
        return self._once("llama", lambda p: build_tiny_llama(p, corpus(self.tofu()), hidden_size=64, num_layers=2,
                                                              vocab_size=300))

    def ddpm(self) -> Path:
        from ImageGeneration.tiny import write_tiny_ddpm_config, write_untrained_ddpm_run

        def build(folder: Path) -> Path:  # the run folder and its config beside it
            folder.mkdir(parents=True)
            write_untrained_ddpm_run(folder / "run", write_tiny_ddpm_config(folder / "tiny_digits.yml"))
            return folder
        return self._once("ddpm", build)

    def dit(self) -> Path:
        from ImageGeneration.tiny import build_tiny_dit
        return self._once("dit", build_tiny_dit)


def run_main(module: str, argv: List[str]):
    """``module.main(argv)`` in this process; a one-line usage error (exit 2) becomes :class:`UsageError`."""
    import importlib
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            return importlib.import_module(module).main(argv)
    except SystemExit as exit_:
        lines = [line for line in stderr.getvalue().splitlines() if line.startswith("error:")]
        raise UsageError(lines[-1][len("error: "):] if lines else f"{module} exited with {exit_.code}") from None


def ic_check(setup: Setup, method: str, optim: str, precision: str, extra: List[str] = (),
             name: str = "run") -> Dict[str, object]:
    entry, flags = IC_METHODS[method]
    save_dir = setup.root / "runs" / "ic" / method / optim / precision / name
    argv = IC_COMMON + flags + IC_PRECISIONS[precision] + list(extra) + [
        "--optim", optim, "--model_path", str(setup.ic_model()), "--save_dir", str(save_dir), "--device", setup.device]
    if method == "SalUn":
        argv += ["--mask_path", str(setup.ic_mask())]
    start = time.perf_counter()
    metrics = run_main(f"ImageClassification.{entry}", argv)
    seconds = time.perf_counter() - start
    saved = torch.load(next(save_dir.glob("*checkpoint.pth.tar")), weights_only=True)["state_dict"]
    dtypes = {str(v.dtype) for v in saved.values() if v.is_floating_point()}
    if dtypes != {"torch.float32"}:
        raise AssertionError(f"saved weights are {sorted(dtypes)}, expected float32 (--amp keeps float32 weights)")
    accuracies = {k: metrics[k] for k in ("retain_acc", "test_acc", "UA")}
    if not all(math.isfinite(v) for v in accuracies.values()):
        raise AssertionError(f"non-finite accuracies {accuracies}")
    images = 1797 * 0.8  # digits' training split, once per epoch (end to end: includes evaluation)
    return {**accuracies, "images_per_second": images / seconds}


def llm_check(setup: Setup, recipe: str, extra: List[str] = (), name: str = "run") -> Dict[str, object]:
    save = setup.root / "runs" / "llm" / recipe / name
    run_main("LLM.main_forget", [
        "--model_path", str(setup.llama()), "--data_path", str(setup.tofu()), "--split", "forget01",
        "--task_list", "1", "--forget_loss", "GA+GD", "--optim_cfg", recipe, "--alternate", "--lr", "1e-5",
        "--forget_lr", "2e-5", "--num_epochs", "2", "--batch_size", "2", "--gradient_accumulation_steps", "1",
        "--max_length", "64", "--dtype", "bfloat16", "--save_dir", str(save), "--device", setup.device, *extra])
    record = read_json(save / "1" / "unlearn_times_1" / "run.json")
    if record["config"]["dtype"] != "bfloat16" or not math.isfinite(record["metrics"]["final_loss"]):
        raise AssertionError(f"dtype {record['config']['dtype']}, final loss {record['metrics']['final_loss']}")
    return {"final_loss": record["metrics"]["final_loss"], "tokens_per_second": record["metrics"]["tokens_per_second"],
            "attn_implementation": record["config"]["attn_implementation"]}


def llm_8bit_check(setup: Setup) -> Dict[str, object]:
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise Skip("bitsandbytes is not installed") from None
    return llm_check(setup, "dual_adam_8bit")


def flash_attention_check(setup: Setup) -> Dict[str, object]:
    from transformers.utils import is_flash_attn_2_available
    if torch.device(setup.device).type != "cuda" or not is_flash_attn_2_available():
        raise Skip("needs CUDA and the flash-attn package")
    metrics = llm_check(setup, "dual_adam", name="flash")
    if metrics["attn_implementation"] != "flash_attention_2":
        raise AssertionError(f"attention {metrics['attn_implementation']}, expected flash_attention_2")
    return metrics


def ddpm_check(setup: Setup) -> Dict[str, object]:
    run, config = setup.ddpm() / "run", setup.ddpm() / "tiny_digits.yml"
    start = time.perf_counter()
    out = Path(run_main("ImageGeneration.DDPM.main_forget", [
        "--ckpt_folder", str(run), "--config", str(config), "--exp_root", str(setup.root / "runs" / "ddpm"),
        "--mode", "rl", "--dual", "--amp", "--device", setup.device]))
    steps = len(read_json(out / "run.json")["metrics"]["history"])
    forget_seconds = time.perf_counter() - start
    samples = Path(run_main("ImageGeneration.DDPM.sample", [
        "--ckpt_folder", str(out), "--config", str(config), "--mode", "sample_classes", "--classes_to_generate", "1",
        "--n_samples_per_class", "4", "--timesteps", "3", "--device", setup.device]))
    if len(list((samples / "1").glob("*.png"))) != 4:
        raise AssertionError(f"expected 4 samples in {samples / '1'}")
    return {"forget_steps": steps, "steps_per_second": steps / forget_seconds}


def dit_check(setup: Setup) -> Dict[str, object]:
    root = setup.dit()
    ckpt, vae = str(root / "ckpt"), ["--vae", str(root / "ckpt" / "vae")]
    start = time.perf_counter()
    out = Path(run_main("ImageGeneration.DiT.main_forget", [
        "--ckpt", ckpt, "--data-path", str(root / "data"), "--results-dir", str(setup.root / "runs" / "dit"),
        "--n-iters", "2", "--batch-size", "2", "--num-workers", "0", "--ckpt-every", "2", "--snapshot-every", "5",
        "--forget-class", "1", "--dual", "--forget_lr", "1e-3", "--amp", "--unlearn-loss", "rl", "--no-vb-loss",
        "--device", setup.device] + vae))
    forget_seconds = time.perf_counter() - start
    sample_dir = setup.root / "runs" / "dit_samples"
    run_main("ImageGeneration.DiT.sample", [
        "--ckpt", ckpt, "--transformer-path", str(out / "checkpoints" / "0000002" / "transformer"),
        "--class-labels", "1", "--n-samples-per-class", "2", "--batch-size", "2", "--num-sampling-steps", "3",
        "--sample-dir", str(sample_dir), "--device", setup.device] + vae)
    if len(list((sample_dir / "1").glob("*.png"))) != 2:
        raise AssertionError(f"expected 2 samples in {sample_dir / '1'}")
    return {"steps_per_second": 2 / forget_seconds}


def determinism_ic(setup: Setup) -> Dict[str, object]:
    first, second = (ic_check(setup, "SalUn", "dual", "amp-bfloat16-channels_last", ["--deterministic"],
                              name=f"deterministic_{i}") for i in (1, 2))
    return _same(first, second, ("retain_acc", "test_acc", "UA"))


def determinism_llm(setup: Setup) -> Dict[str, object]:
    first, second = (llm_check(setup, "dual_adam", ["--deterministic"], name=f"deterministic_{i}") for i in (1, 2))
    return _same(first, second, ("final_loss",))


def _same(first: dict, second: dict, keys) -> Dict[str, object]:
    differ = {k: (first[k], second[k]) for k in keys if first[k] != second[k]}
    if differ:
        raise AssertionError(f"same seed, different numbers: {differ}")
    return {k: first[k] for k in keys}


def accelerate_check(setup: Setup) -> Dict[str, object]:
    if torch.device(setup.device).type != "cuda" or torch.cuda.device_count() < 2:
        raise Skip("needs 2 or more GPUs")
    save = setup.root / "runs" / "accelerate"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--mixed_precision", "bf16", str(REPO / "LLM" / "main_forget.py"),
               "--model_path", str(setup.llama()), "--data_path", str(setup.tofu()), "--split", "forget01",
               "--task_list", "1", "--forget_loss", "GA+GD", "--optim_cfg", "dual_adam", "--alternate",
               "--num_epochs", "2", "--batch_size", "1", "--gradient_accumulation_steps", "1", "--max_length", "64",
               "--dtype", "bfloat16", "--save_dir", str(save)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
    if result.returncode != 0:
        raise AssertionError("accelerate launch failed: " + " | ".join(result.stderr.strip().splitlines()[-3:]))
    record = read_json(save / "1" / "unlearn_times_1" / "run.json")
    return {"num_processes": record["metrics"]["num_processes"],
            "tokens_per_second": record["metrics"]["tokens_per_second"]}


def all_checks(setup: Setup) -> List[Check]:
    checks = [Check(f"ic/{method}/{optim}/{precision}", (lambda m=method, o=optim, p=precision: ic_check(setup, m, o, p)),
                    "ic")
              for precision in IC_PRECISIONS for method in IC_METHODS for optim in ("sgd", "dual")]
    checks += [Check("llm/dual_adam/bfloat16", lambda: llm_check(setup, "dual_adam"), "llm"),
               Check("llm/dual_adam_8bit/bfloat16", lambda: llm_8bit_check(setup), "llm-8bit"),
               Check("llm/flash_attention_2", lambda: flash_attention_check(setup), "llm-flash"),
               Check("ddpm/forget+sample", lambda: ddpm_check(setup), "ddpm"),
               Check("dit/forget+sample", lambda: dit_check(setup), "dit"),
               Check("accelerate/2-process", lambda: accelerate_check(setup), "accelerate"),
               # last: --deterministic switches the process to deterministic kernels for good
               Check("determinism/llm", lambda: determinism_llm(setup), "determinism"),
               Check("determinism/ic", lambda: determinism_ic(setup), "determinism")]
    return checks


def run_check(check: Check, device: torch.device, log: Path) -> Outcome:
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    try:
        with open(log, "a") as handle, contextlib.redirect_stdout(handle):
            metrics = check.run()
        status, message = "PASS", ""
    except Skip as reason:
        metrics, status, message = {}, "SKIP", str(reason)
    except UsageError as err:
        metrics, status, message = {}, "FAIL", f"error: {err}"
    except Exception as err:  # a crash of any kind is this check's FAIL; the others still run
        with open(log, "a") as handle:
            traceback.print_exc(file=handle)
        metrics, status, message = {}, "FAIL", f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None
    return Outcome(check.name, status, time.perf_counter() - start, metrics, message, peak)


def environment(device: torch.device) -> Dict[str, object]:
    info = {"device": str(device), "torch": torch.__version__, "python": platform.python_version(),
            "cuda": torch.version.cuda, "gpus": torch.cuda.device_count() if torch.cuda.is_available() else 0}
    if device.type == "cuda":
        info.update(gpu=torch.cuda.get_device_name(device), bf16=torch.cuda.is_bf16_supported(),
                    capability=".".join(map(str, torch.cuda.get_device_capability(device))))
    return info


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:<i> or cpu (the suite's smoke test)")
    parser.add_argument("--out", default="gpu_check_runs", help="folder for the runs, logs and gpu_check.json")
    parser.add_argument("--quick", action="store_true", help="only the first check of each family")
    parser.add_argument("--only", default=None,
                        help="only the checks whose name contains one of these comma-separated texts")
    return parser


@cli_main
def main(argv: Optional[List[str]] = None) -> Dict[str, object]:
    args = build_parser().parse_args(argv)
    device = get_device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    setup = Setup(out / "setup", str(device))
    checks = all_checks(setup)
    if args.quick:
        checks = [c for i, c in enumerate(checks) if c.family not in {d.family for d in checks[:i]}]
    if args.only:
        checks = [c for c in checks if any(text in c.name for text in args.only.split(","))]
    print(f"gpu_check on {device} ({len(checks)} checks; logs in {out / 'log.txt'})", flush=True)
    outcomes = []
    for check in checks:
        outcomes.append(run_check(check, device, out / "log.txt"))
        print(outcomes[-1].line(), flush=True)
    failed = [o.name for o in outcomes if o.status == "FAIL"]
    report = {"environment": environment(device), "checks": [vars(o) for o in outcomes],
              "passed": sum(o.status == "PASS" for o in outcomes), "skipped": sum(o.status == "SKIP" for o in outcomes),
              "failed": failed}
    atomic_write_json(report, out / "gpu_check.json")
    print(f"{'FAIL' if failed else 'PASS'}: {report['passed']} passed, {report['skipped']} skipped, "
          f"{len(failed)} failed -> {out / 'gpu_check.json'}")
    if failed:
        raise SystemExit(1)
    return report


if __name__ == "__main__":
    main()
