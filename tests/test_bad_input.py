"""Bad input for every entry script: exit status 2, one line on stderr naming the flag or file, nothing written.

One table, :data:`CASES`, holds for every entry script each class of bad input
that applies to it: missing or unreadable data, wrong types and ranges of
numeric flags, unknown choices, checkpoints and masks that do not fit, and an
output folder that cannot be created (a path below a regular file -- the tests
run as root, where a read-only folder would still be writable).  Each case runs
the script's ``main(argv)`` in-process and checks that

* it exits with status 2 and prints exactly one line, ``error: ...``, holding
  the expected text (no traceback, no usage block);
* no file or folder appears, disappears or changes under the run's own folder
  (which holds an earlier "finished" result) or under any shared input.

A few cases also run as programs, to prove the real command line prints one line.
"""
from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import numpy as np
import pytest
import torch
from PIL import Image
import unsafe

REPO = Path(__file__).resolve().parents[1]
CPU = ["--device", "cpu"]


@dataclass(frozen=True)
class Inputs:
    """Paths a case's command line is built from; ``tmp``, ``out``, ``blocked``, ``missing`` and ``corrupt``
    are the case's own, the rest are shared, valid inputs."""

    tmp: Path
    out: Path          # the output folder, holding an earlier finished result
    blocked: str       # a regular file: "<blocked>/sub" can never be created as a folder
    missing: str       # a path that does not exist
    corrupt: str       # a truncated torch checkpoint
    ic_model: str
    ic_model_100: str  # the same architecture with a 100-class head
    ic_bad_mask: str
    llm_model: str
    tofu: str
    real_world: str
    bert: str          # a Hugging Face model folder that is not a causal LM
    ddpm_config: str
    ddpm_run: str
    ddpm_retrain_run: str  # trained on every class but 0
    ddpm_bad_mask: str
    ddpm_classifier: str
    gray_samples: str  # a folder of 8x8 grayscale PNGs
    dit_ckpt: str
    dit_data: str
    dit_bad_mask: str
    dit_classifier: str
    rgb_samples: str   # a folder of 16x16 RGB PNGs
    shared_roots: Tuple[Path, ...]


@dataclass(frozen=True)
class Case:
    module: str
    label: str
    argv: Callable[[Inputs], List[str]]
    message: str  # expected in the error line ("a ... b": both, in order); ``{i.<field>}`` is filled in

    @property
    def id(self) -> str:
        return f"{self.module.replace('ImageClassification', 'IC').replace('ImageGeneration.', '')}: {self.label}"


# --------------------------------------------------------------------------- shared inputs

def write_pngs(folder: Path, count: int, size: int, mode: str) -> str:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        shape = (size, size) if mode == "L" else (size, size, 3)
        Image.fromarray(rng.integers(0, 255, size=shape).astype(np.uint8), mode).save(folder / f"{index}.png")
    return str(folder)


def ddpm_run_folder(folder: Path, config_path: str, trained_classes) -> str:
    """A run folder of an untrained DDPM that was trained, says its checkpoint, on ``trained_classes``."""
    from ImageGeneration.DDPM.checkpoints import CKPT_RELPATH, save_checkpoint
    from ImageGeneration.DDPM.config import load_config
    from ImageGeneration.DDPM.networks import build_unet

    config = load_config(config_path, "digits", "pretrain")
    save_checkpoint(folder / CKPT_RELPATH, build_unet(config.model, config.data), config, trained_classes, step=0)
    return str(folder)


@pytest.fixture(scope="session")
def shared_inputs(tmp_path_factory, tofu_dir, tiny_model, real_world_dir, tiny_dit, digits_resnet20s,
                  tiny_ddpm_config, tiny_ddpm_run) -> Dict[str, object]:
    import torchvision
    from transformers import DistilBertConfig

    from ImageClassification.data import DATASETS
    from ImageClassification.models import build_model
    from ImageGeneration.DDPM.classifier import ImageClassifier, save_classifier

    root = tmp_path_factory.mktemp("bad_input_inputs")
    digits = DATASETS.get("digits")
    model = build_model("resnet20s", 100, digits.mean, digits.std)
    torch.save({"state_dict": model.state_dict(), "arch": "resnet20s"}, root / "ic_model_100.pth.tar")
    torch.save({"backbone.fc.weight": torch.ones(3, 3)}, root / "ic_bad_mask.pt")
    DistilBertConfig(vocab_size=10, dim=8, n_layers=1, n_heads=1, hidden_dim=8).save_pretrained(root / "bert")

    config = str(tiny_ddpm_config)
    torch.save({"conv_in.weight": torch.ones(3, 3)}, root / "ddpm_bad_mask.pt")
    save_classifier(ImageClassifier("small_cnn", 10, 1, 8), root / "classifier" / "digits_small_cnn.pth")
    torch.save({"proj_out_2.weight": torch.ones(1)}, root / "dit_bad_mask.pt")
    torch.save(torchvision.models.shufflenet_v2_x0_5(num_classes=3).state_dict(), root / "dit_classifier.pth")
    return dict(
        ic_model=str(digits_resnet20s), ic_model_100=str(root / "ic_model_100.pth.tar"),
        ic_bad_mask=str(root / "ic_bad_mask.pt"), llm_model=str(tiny_model), tofu=str(tofu_dir),
        real_world=str(real_world_dir), bert=str(root / "bert"), ddpm_config=config,
        ddpm_run=str(tiny_ddpm_run),
        ddpm_retrain_run=ddpm_run_folder(root / "ddpm_retrain", config, list(range(1, 10))),
        ddpm_bad_mask=str(root / "ddpm_bad_mask.pt"), ddpm_classifier=str(root / "classifier"),
        gray_samples=write_pngs(root / "gray", 4, 8, "L"), dit_ckpt=str(tiny_dit / "ckpt"),
        dit_data=str(tiny_dit / "data"), dit_bad_mask=str(root / "dit_bad_mask.pt"),
        dit_classifier=str(root / "dit_classifier.pth"), rgb_samples=write_pngs(root / "rgb", 2, 16, "RGB"),
        shared_roots=(root, Path(tofu_dir), Path(tiny_model), Path(real_world_dir), Path(tiny_dit),
                      digits_resnet20s.parent, tiny_ddpm_config.parent, tiny_ddpm_run))


@pytest.fixture
def inputs(shared_inputs, tmp_path) -> Inputs:
    out = tmp_path / "out"
    out.mkdir()
    (out / "earlier_run.json").write_text('{"finished": true}\n')
    (tmp_path / "blocker").write_text("a regular file\n")
    corrupt = tmp_path / "corrupt.pt"
    torch.save({"w": torch.arange(1000.0)}, corrupt)
    corrupt.write_bytes(corrupt.read_bytes()[:300])
    return Inputs(tmp=tmp_path, out=out, blocked=str(tmp_path / "blocker"), missing=str(tmp_path / "missing"),
                  corrupt=str(corrupt), **shared_inputs)


def snapshot(roots) -> Dict[str, tuple]:
    """Every file and folder under ``roots`` with what changes when it is rewritten (size, mtime, inode)."""
    state = {}
    for root in roots:
        for path in [root, *root.rglob("*")]:
            info = path.stat()
            state[str(path)] = ("dir",) if path.is_dir() else (info.st_size, info.st_mtime_ns, info.st_ino)
    return state


# --------------------------------------------------------------------------- command lines
# Builders return a case's argv; some first write the case's broken input files into ``i.tmp``.

IC = ["--dataset", "digits", "--arch", "resnet20s", "--batch_size", "128", "--num_indexes_to_replace", "60"] + CPU


def ic_train(i: Inputs, *extra: str) -> List[str]:
    return IC + ["--epochs", "1", "--save_dir", str(i.out), *extra]


def finished_training(i: Inputs) -> List[str]:
    (i.out / "0model_SA_best.pth.tar").write_text("an earlier run's model")
    return ic_train(i)


def ic_unlearn(i: Inputs, *extra: str, unlearn: str = "RL") -> List[str]:
    return IC + ["--unlearn", unlearn, "--unlearn_epochs", "1", "--model_path", i.ic_model,
                 "--save_dir", str(i.out), *extra]


def ic_sfron(i: Inputs, *extra: str) -> List[str]:
    return ic_unlearn(i, "--sfron_iters", "2", *extra, unlearn="SFRon")


def ic_lora(i: Inputs, *extra: str, ranks: str = "0.25", unlearn: str = "RL") -> List[str]:
    config = i.tmp / "ranks.json"
    config.write_text(ranks)
    return ["resnet20s_lora" if a == "resnet20s" else a for a in ic_unlearn(i, unlearn=unlearn)] + [
        "--rank_config", str(config), *extra]


def ic_mask(i: Inputs, *extra: str) -> List[str]:
    return IC + ["--model_path", i.ic_model, "--save_dir", str(i.out), *extra]


def ic_results(i: Inputs, *extra: str) -> List[str]:
    """Two finished runs (retrain and RL) for parse_result."""
    for name, unlearn in (("retrain", "retrain"), ("rl", "RL")):
        folder = i.tmp / "runs" / name
        folder.mkdir(parents=True)
        (folder / "eval_result.json").write_text(
            f'{{"unlearn": "{unlearn}", "optim": "sgd", "unlearn_lr": 0.01, "UA": 5, "RA": 99, "TA": 94, "MIA": 10}}')
    return ["--log_paths", str(i.tmp / "runs"), *extra]


def corrupt_eval_result(i: Inputs) -> List[str]:
    bad = i.tmp / "bad" / "eval_result.json"
    bad.parent.mkdir()
    bad.write_text('{"UA": 1')
    return ["--log_paths", str(bad.parent)]


def llm(i: Inputs, *extra: str) -> List[str]:
    return ["--model_path", i.llm_model, "--data_path", i.tofu, "--split", "forget01", "--save_dir", str(i.out),
            "--max_length", "32", *CPU, *extra]


def tofu_copy(i: Inputs, broken_file: str, text: str) -> str:
    """The tiny TOFU folder with one file replaced by ``text``."""
    folder = i.tmp / "tofu"
    folder.mkdir()
    for file in Path(i.tofu).iterdir():
        (folder / file.name).write_bytes(file.read_bytes())
    (folder / broken_file).write_text(text)
    return str(folder)


def llm_config(i: Inputs, text: str) -> str:
    path = i.tmp / "config.yaml"
    path.write_text(text)
    return str(path)


def broken_model(i: Inputs) -> str:
    """A model folder whose config.json is not JSON."""
    folder = i.tmp / "broken"
    folder.mkdir()
    (folder / "config.json").write_text("{")
    return str(folder)


def llm_results(i: Inputs, *extra: str) -> List[str]:
    run = i.tmp / "results" / "seed1" / "eval_results-last"
    run.mkdir(parents=True)
    (run / "aggregate_stat.json").write_text('{"Model Utility": 0.5, "Forget Quality": 0.1}')
    return ["--root", str(i.tmp / "results"), *extra]


def real_world(i: Inputs, *extra: str) -> List[str]:
    return ["--model_path", i.llm_model, "--data_path", i.real_world, "--save_dir", str(i.out),
            "--max_length", "32", *CPU, *extra]


def ddpm(i: Inputs, *extra: str, run: str = "") -> List[str]:
    return ["--ckpt_folder", run or i.ddpm_run, "--config", i.ddpm_config, *CPU, *extra]


def stored_fishers(i: Inputs, remain_key: str = "b", corrupt_forget: bool = False) -> str:
    """A folder of stored Fisher diagonals (``generate_mask.py --ckpt_folder`` of that kind): ``forget`` over key
    ``a`` (or a truncated file) and ``remain`` over ``remain_key``."""
    torch.save({"a": torch.ones(2)}, i.tmp / "forget_fisher.pt")
    torch.save({remain_key: torch.ones(2)}, i.tmp / "remain_fisher.pt")
    if corrupt_forget:
        (i.tmp / "forget_fisher.pt").write_bytes(Path(i.corrupt).read_bytes())
    return str(i.tmp)


def corrupt_run(i: Inputs) -> str:
    """A run folder whose ``ckpts/ckpt.pth`` is truncated."""
    (i.tmp / "run" / "ckpts").mkdir(parents=True)
    (i.tmp / "run" / "ckpts" / "ckpt.pth").write_bytes(Path(i.corrupt).read_bytes())
    return str(i.tmp / "run")


def ddpm_config_with(i: Inputs, **model: object) -> str:
    """The tiny DDPM config with ``model:`` keys changed."""
    import yaml

    tree = yaml.safe_load(Path(i.ddpm_config).read_text())
    tree["model"].update(model)
    path = i.tmp / "ddpm.yml"
    path.write_text(yaml.safe_dump(tree))
    return str(path)


def research_ddpm_run(i: Inputs, entries: int = 4) -> str:
    """A run folder holding the research code's checkpoint list (``module.`` keys) of the tiny config's network
    built as ``conditional_model``, cut to its first ``entries`` entries."""
    from ImageGeneration.DDPM.config import load_config
    from ImageGeneration.DDPM.networks import build_unet

    config = load_config(ddpm_config_with(i, network="conditional_model"), "digits", "pretrain")
    net = build_unet(config.model, config.data)
    weights = {f"module.{k}": v for k, v in net.state_dict().items()}
    (i.tmp / "run" / "ckpts").mkdir(parents=True)
    torch.save([weights, {}, 0, dict(net.named_parameters())][:entries], i.tmp / "run" / "ckpts" / "ckpt.pth")
    return str(i.tmp / "run")


def ddpm_train(i: Inputs, *extra: str) -> List[str]:
    return ["--config", i.ddpm_config, "--exp_root", str(i.out), *CPU, *extra]


def ddpm_forget(i: Inputs, *extra: str) -> List[str]:
    return ddpm(i, "--exp_root", str(i.out), *extra)


def ddpm_config_text(i: Inputs, section: str, key: str, value: str) -> str:
    """The tiny DDPM config with ``<section>.<key>`` written as the YAML text ``value``."""
    lines = Path(i.ddpm_config).read_text().splitlines()
    start = lines.index(f"{section}:")
    index = next(k for k in range(start + 1, len(lines)) if lines[k].strip().startswith(f"{key}:"))
    lines[index] = f"  {key}: {value}"
    path = i.tmp / "ddpm.yml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def not_utf8(i: Inputs, name: str = "config.yaml") -> str:
    """A config file of Latin-1 bytes: ``lr: 1e-5  # 5 \\xb5s`` (reproduced: a UnicodeDecodeError traceback)."""
    path = i.tmp / name
    path.write_bytes(b"lr: 1e-5  # 5 \xb5s\n")
    return str(path)


def ddpm_resume_over_unsafe_snapshot(i: Inputs) -> List[str]:
    """``main_train --resume`` into an unfinished run folder whose snapshot pickles ``os.system``."""
    run = i.out / "results" / "digits" / "pretrain" / "2020_01_01_000000"
    run.mkdir(parents=True)
    torch.save({"objects": unsafe.writes_pwned(i.tmp)}, run / "resume_state.pt")
    return ddpm_train(i, "--resume")


def dit_resume_over_unsafe_snapshot(i: Inputs) -> List[str]:
    """DiT ``main_forget --resume`` into an unfinished experiment folder whose snapshot pickles ``os.system``."""
    run = i.out / "000-DiT-XL-2-forget-1-ron-ga-lr1e-05-f1.0-r1.0"
    run.mkdir()
    torch.save({"objects": unsafe.writes_pwned(i.tmp)}, run / "resume_state.pt")
    return dit_forget(i, "--resume")


def pickled_weights(i: Inputs, source: str, name: str, part: str = "", weights: str = "pytorch_model.bin") -> str:
    """A copy of the Hugging Face folder ``source`` whose ``part`` holds a pickled ``weights`` file that runs
    code instead of its safetensors: refused in one line naming the type (issue 25, item 5)."""
    folder = i.tmp / name
    shutil.copytree(source, folder)
    for tensors in (folder / part).glob("*.safetensors"):
        tensors.unlink()
    torch.save({"weight": unsafe.writes_pwned(i.tmp)}, folder / part / weights)
    return str(folder)


def llm_pickled(i: Inputs) -> str:
    return pickled_weights(i, i.llm_model, "pickled_llm")


def dit_pickled(i: Inputs, part: str) -> str:
    """``--ckpt``'s layout with ``part`` (transformer or vae) pickled."""
    return pickled_weights(i, i.dit_ckpt, "pickled_dit", part, "diffusion_pytorch_model.bin")


def ddpm_mask(i: Inputs, *extra: str) -> List[str]:
    return ddpm(i, "--save_dir", str(i.out), *extra)


def classifier_eval(i: Inputs, *extra: str) -> List[str]:
    return ["--sample_path", i.gray_samples, "--ckpt_path", i.ddpm_classifier, *CPU, *extra]


def fid(i: Inputs, *extra: str) -> List[str]:
    return [i.gray_samples, "--ref_dataset", "digits", "--features", "pixels", "--kid_subset_size", "2", *CPU,
            *extra]


def dit_forget(i: Inputs, *extra: str) -> List[str]:
    return ["--ckpt", i.dit_ckpt, "--data-path", i.dit_data, "--results-dir", str(i.out), "--n-iters", "1",
            "--batch-size", "2", "--num-workers", "0", "--forget-class", "1", "--vae", i.dit_ckpt, *CPU, *extra]


def dit_mask(i: Inputs, *extra: str) -> List[str]:
    return ["--ckpt", i.dit_ckpt, "--data-path", i.dit_data, "--mask-path", str(i.out), "--n-iters", "1",
            "--batch-size", "2", "--num-workers", "0", "--forget-class", "1", "--vae", i.dit_ckpt, *CPU, *extra]


def dit_sample(i: Inputs, *extra: str) -> List[str]:
    return ["--ckpt", i.dit_ckpt, "--class-labels", "1", "--n-samples-per-class", "1", "--num-sampling-steps", "2",
            "--sample-dir", str(i.out), "--vae", i.dit_ckpt, *CPU, *extra]


def dit_sample_ddp(i: Inputs, *extra: str) -> List[str]:
    return ["--ckpt", i.dit_ckpt, "--num-fid-samples", "1", "--per-proc-batch-size", "1", "--num-sampling-steps", "2",
            "--sample-dir", str(i.out), "--vae", i.dit_ckpt, *CPU, *extra]


def dit_judge(i: Inputs, *extra: str) -> List[str]:
    return ["--sample-path", i.rgb_samples, "--forget-class", "1", "--arch", "shufflenet_v2_x0_5",
            "--num-classes", "3", "--classifier-weights", i.dit_classifier, "--image-size", "16", *CPU, *extra]



# --------------------------------------------------------------------------- unsafe and malformed files

def malicious_checkpoint(i: Inputs) -> str:
    """:func:`unsafe.malicious_checkpoint` under ``i.tmp``: refused before it runs, so the case's check that
    nothing appears under ``i.tmp`` proves the command never ran."""
    return str(unsafe.malicious_checkpoint(i.tmp))


def torch_file(i: Inputs, name: str, obj: object) -> str:
    path = i.tmp / name
    torch.save(obj, path)
    return str(path)


def training_resumed_from_another_run(i: Inputs) -> List[str]:
    """``main_train --resume`` over a snapshot written by a run with other settings."""
    from common.checkpointing import Snapshotter

    Snapshotter(i.out, config={"arch": "resnet56s"}).save(epoch=0)
    return ic_train(i, "--resume")


def training_resumed_from_weights(i: Inputs) -> List[str]:
    """``main_train --resume`` over a ``resume_state.pt`` that is a bare state dict."""
    torch.save({"w": torch.ones(1)}, i.out / "resume_state.pt")
    return ic_train(i, "--resume")


def fishers_that_run_code(i: Inputs) -> str:
    """Stored Fisher diagonals whose forget file writes ``<tmp>/pwned.txt`` when unpickled."""
    folder = stored_fishers(i, remain_key="a")
    torch.save({"a": unsafe.writes_pwned(i.tmp)}, i.tmp / "forget_fisher.pt")
    return folder


def ddpm_run_with_weights(i: Inputs, weights: Dict[str, object]) -> str:
    """A DDPM run folder whose checkpoint holds ``weights`` as its model."""
    (i.tmp / "run" / "ckpts").mkdir(parents=True)
    torch.save({"model": weights, "config": {}, "trained_classes": [0]}, i.tmp / "run" / "ckpts" / "ckpt.pth")
    return str(i.tmp / "run")


def case(module: str, label: str, argv: Callable[[Inputs], List[str]], message: str) -> Case:
    return Case(module, label, argv, message)


UNWRITABLE = "cannot create folder ({i.blocked} is a file)"
REFUSED = ": holds posix.system, not allowed in a safely loaded file (tensors and plain values only); if you trust " \
          "the file's source, pass --trust_checkpoint or set DUALOPTIM_TRUST_CHECKPOINT=1"

CASES = [
    # ---------------------------------------------------------------- image classification
    case("ImageClassification.main_train", "negative epochs", lambda i: ic_train(i, "--epochs", "-1"),
         "argument --epochs: expected an integer >= 1, got '-1'"),
    case("ImageClassification.main_train", "learning rate not a number", lambda i: ic_train(i, "--lr", "fast"),
         "argument --lr: expected a number > 0, got 'fast'"),
    case("ImageClassification.main_train", "unknown dataset", lambda i: ic_train(i, "--dataset", "mnist"),
         "--dataset: unknown value 'mnist'"),
    case("ImageClassification.main_train", "missing data", lambda i: ic_train(
        i, "--dataset", "cifar10", "--data", i.missing + ".zip"), "--data {i.missing}.zip: not found"),
    case("ImageClassification.main_train", "unwritable save_dir",
         lambda i: ic_train(i, "--save_dir", i.blocked + "/sub"), "--save_dir {i.blocked}/sub: " + UNWRITABLE),
    case("ImageClassification.main_train", "finished result in save_dir", finished_training,
         "already holds finished results (0model_SA_best.pth.tar)"),
    case("ImageClassification.main_train", "missing swin_t pretrained weights",
         lambda i: ic_train(i, "--arch", "swin_t", "--pretrained_weights", i.missing),
         "--pretrained_weights {i.missing}: file not found"),
    case("ImageClassification.main_train", "SAM with float16 loss scaling",
         lambda i: ic_train(i, "--optim", "sam", "--amp", "--amp_dtype", "float16"),
         "--amp_dtype float16: not supported with SAM"),
    case("ImageClassification.main_random", "unknown method", lambda i: ic_unlearn(i, "--unlearn", "salun"),
         "--unlearn: unknown value 'salun'"),
    case("ImageClassification.main_random", "unknown optimizer", lambda i: ic_unlearn(i, "--optim", "rmsprop"),
         "argument --optim: invalid choice: 'rmsprop'"),
    case("ImageClassification.main_random", "zero logging steps", lambda i: ic_unlearn(i, "--logging_steps", "0"),
         "argument --logging_steps: expected an integer >= 1, got '0'"),
    case("ImageClassification.main_random", "unknown tracker", lambda i: ic_unlearn(i, "--report_to", "mlflow"),
         "argument --report_to: invalid choice: 'mlflow'"),
    case("ImageClassification.main_random", "zero epochs", lambda i: ic_unlearn(i, "--unlearn_epochs", "0"),
         "argument --unlearn_epochs: expected an integer >= 1, got '0'"),
    case("ImageClassification.main_random", "negative retain lr", lambda i: ic_unlearn(i, "--retain_lr", "-0.1"),
         "argument --retain_lr: expected a number > 0, got '-0.1'"),
    case("ImageClassification.main_random", "seed 0", lambda i: ic_unlearn(i, "--seed", "0"),
         "argument --seed: expected an integer >= 1, got '0'"),
    case("ImageClassification.main_random", "forget set larger than the data",
         lambda i: ic_unlearn(i, "--num_indexes_to_replace", "100000"),
         "--num_indexes_to_replace: 100000 is larger than the train set"),
    case("ImageClassification.main_random", "class out of range", lambda i: ic_unlearn(i, "--class_to_replace", "10"),
         "--class_to_replace: must be -1 (any class) or 0..9, got 10"),
    case("ImageClassification.main_random", "missing checkpoint", lambda i: ic_unlearn(i, "--model_path", i.missing),
         "--model_path {i.missing}: file not found"),
    case("ImageClassification.main_random", "corrupt checkpoint", lambda i: ic_unlearn(i, "--model_path", i.corrupt),
         "--model_path {i.corrupt}: cannot be read as a torch checkpoint"),
    case("ImageClassification.main_random", "checkpoint of another arch",
         lambda i: ic_unlearn(i, "--arch", "resnet44s"), "checkpoint is a resnet20s, but --arch is resnet44s"),
    case("ImageClassification.main_random", "checkpoint with another class count",
         lambda i: ic_unlearn(i, "--model_path", i.ic_model_100),
         "weight 'backbone.fc.weight' has shape (100, 64), --arch resnet20s with this dataset expects (10, 64)"),
    case("ImageClassification.main_random", "mask of another model",
         lambda i: ic_unlearn(i, "--mask_path", i.ic_bad_mask),
         "--mask_path {i.ic_bad_mask}: key 'backbone.fc.weight' has shape (3, 3), the model expects (10, 64)"),
    case("ImageClassification.main_random", "checkpoint that runs code",
         lambda i: ic_unlearn(i, "--model_path", malicious_checkpoint(i)), "--model_path {i.tmp}/found_online.pth.tar" + REFUSED),
    case("ImageClassification.main_random", "checkpoint without a state dict",
         lambda i: ic_unlearn(i, "--model_path", torch_file(i, "c.pt", {"epoch": 3, "best_sa": 90.0})),
         "--model_path {i.tmp}/c.pt: holds no state dict (expected 'state_dict' or a dict of parameter name -> tensor), "
         "got a dict with keys 'epoch', 'best_sa'"),
    case("ImageClassification.main_random", "state dict with a non-tensor",
         lambda i: ic_unlearn(i, "--model_path", torch_file(i, "c.pt", {"state_dict": {"backbone.conv1.weight": "w"}})),
         "--model_path {i.tmp}/c.pt ('state_dict'): state dict entry 'backbone.conv1.weight' is a str, expected a tensor"),
    case("ImageClassification.main_random", "mask not 0/1",
         lambda i: ic_unlearn(i, "--mask_path", torch_file(i, "m.pt", {"backbone.fc.weight": torch.full((10, 64), 0.5)})),
         "--mask_path {i.tmp}/m.pt: key 'backbone.fc.weight' holds values other than 0 and 1; expected a 0/1 mask"),
    case("ImageClassification.main_random", "mask of non-tensors",
         lambda i: ic_unlearn(i, "--mask_path", torch_file(i, "m.pt", {"backbone.fc.weight": [0, 1]})),
         "--mask_path {i.tmp}/m.pt: expected a dict of parameter name -> tensor"),
    case("ImageClassification.main_random", "mask holding NumPy arrays",
         lambda i: ic_unlearn(i, "--mask_path", torch_file(i, "m.pt", {"backbone.fc.weight": np.ones((10, 64))})),
         "--mask_path {i.tmp}/m.pt: holds numpy._core.multiarray._reconstruct, numpy.ndarray, not allowed"),
    case("ImageClassification.main_train", "snapshot from another run", training_resumed_from_another_run,
         "--resume {i.out}/resume_state.pt: the snapshot was written with other settings ("),
    case("ImageClassification.main_train", "snapshot that is not one", training_resumed_from_weights,
         "--resume {i.out}/resume_state.pt: not a resume snapshot of this toolkit"),
    case("ImageClassification.main_random", "missing mask", lambda i: ic_unlearn(i, "--mask_path", i.missing),
         "--mask_path {i.missing}: file not found"),
    case("ImageClassification.main_random", "unwritable save_dir",
         lambda i: ic_unlearn(i, "--save_dir", i.blocked + "/sub"), "--save_dir {i.blocked}/sub: " + UNWRITABLE),
    case("ImageClassification.main_forget", "retrain_sam with float16 loss scaling",
         lambda i: ic_unlearn(i, "--amp", "--amp_dtype", "float16", unlearn="retrain_sam"),
         "--amp_dtype float16: not supported with SAM"),
    case("ImageClassification.main_forget", "unknown MIA", lambda i: ic_unlearn(i, "--mia", "lira", unlearn="GA"),
         "argument --mia: invalid choice: 'lira'"),
    case("ImageClassification.main_forget", "zero lr", lambda i: ic_unlearn(i, "--unlearn_lr", "0", unlearn="GA"),
         "argument --unlearn_lr: expected a number > 0, got '0'"),
    case("ImageClassification.main_forget", "checkpoint is a folder",
         lambda i: ic_unlearn(i, "--model_path", str(i.out), unlearn="SCRUB"),
         "--model_path {i.out}: is a folder, expected a checkpoint file"),
    case("ImageClassification.main_forget", "bad forget indexes",
         lambda i: [a for a in ic_unlearn(i, "--indexes_to_replace", "1,x", unlearn="GA")
                    if a not in ("--num_indexes_to_replace", "60")],
         "--indexes_to_replace: expected comma-separated integers, got '1,x'"),
    case("ImageClassification.main_forget", "unwritable save_dir",
         lambda i: ic_unlearn(i, "--save_dir", i.blocked + "/sub", unlearn="FT"),
         "--save_dir {i.blocked}/sub: " + UNWRITABLE),
    case("ImageClassification.main_random_sfron", "adam with momentum 1",
         lambda i: ic_sfron(i, "--optim", "adam", "--momentum", "1"),
         "--momentum: must be below 1 with SFR-on --optim adam"),
    case("ImageClassification.main_random", "RL_proximal mask ratio above 1",
         lambda i: ic_unlearn(i, "--mask_ratio", "1.5", unlearn="RL_proximal"),
         "argument --mask_ratio: expected a number in [0, 1], got '1.5'"),
    case("ImageClassification.main_forget", "pruning rate above 1", lambda i: ic_unlearn(i, "--rate", "2", unlearn="GA_prune"),
         "argument --rate: expected a number in [0, 1], got '2'"),
    case("ImageClassification.main_forget", "zero pruning times",
         lambda i: ic_unlearn(i, "--pruning_times", "0", unlearn="GA_prune"),
         "argument --pruning_times: expected an integer >= 1, got '0'"),
    case("ImageClassification.main_forget", "negative rewind epoch",
         lambda i: ic_unlearn(i, "--rewind_epoch", "-1", unlearn="GA_prune"),
         "argument --rewind_epoch: expected an integer >= 0, got '-1'"),
    case("ImageClassification.main_forget", "unknown prune type",
         lambda i: ic_unlearn(i, "--prune_type", "imp", unlearn="GA_prune"), "argument --prune_type: invalid choice"),
    case("ImageClassification.main_random_lora", "not a LoRA arch",
         lambda i: ["resnet20s" if a == "resnet20s_lora" else a for a in ic_lora(i)],
         "--arch: main_random_lora.py trains LoRA adapters of a model such as resnet18_lora, got 'resnet20s'"),
    case("ImageClassification.main_random_lora", "no rank config",
         lambda i: [a for a in ic_lora(i) if a != "--rank_config" and not a.endswith("ranks.json")],
         "--rank_config: required"),
    case("ImageClassification.main_random_lora", "missing rank config", lambda i: ic_lora(i, "--rank_config", i.missing),
         "--rank_config {i.missing}: file not found"),
    case("ImageClassification.main_random_lora", "corrupt rank config", lambda i: ic_lora(i, ranks='{"conv1": '),
         "--rank_config ... not valid JSON"),
    case("ImageClassification.main_random_lora", "rank fraction above 1", lambda i: ic_lora(i, ranks="2"),
         "--rank_config: rank fractions must be in [0, 1], got 2 for every layer"),
    case("ImageClassification.main_random_lora", "layer without a rank", lambda i: ic_lora(i, ranks='{"conv1": 0.5}'),
         "--rank_config: no rank for layer 'layers.0.conv1'"),
    case("ImageClassification.main_random_lora", "retrain", lambda i: ic_lora(i, unlearn="retrain"),
         "--unlearn retrain (retrain is the default): main_random_lora.py unlearns through LoRA adapters"),
    case("ImageClassification.main_random_lora", "retrain_sam", lambda i: ic_lora(i, unlearn="retrain_sam"),
         "--unlearn retrain_sam (retrain is the default): main_random_lora.py unlearns through LoRA adapters"),
    case("ImageClassification.main_random_lora", "saliency mask", lambda i: ic_lora(i, "--mask_path", i.ic_bad_mask),
         "--mask_path: a saliency mask covers the full weights, not LoRA adapters"),
    case("ImageClassification.main_random_lora", "checkpoint of another arch",
         lambda i: ["resnet56s_lora" if a == "resnet20s_lora" else a for a in ic_lora(i)],
         "checkpoint is a resnet20s, but --arch is resnet56s"),
    case("ImageClassification.main_random_lora", "unwritable save_dir",
         lambda i: ic_lora(i, "--save_dir", i.blocked + "/sub"), "--save_dir {i.blocked}/sub: " + UNWRITABLE),
    case("ImageClassification.main_random_sfron", "zero iterations", lambda i: ic_sfron(i, "--sfron_iters", "0"),
         "argument --sfron_iters: expected an integer >= 1, got '0'"),
    case("ImageClassification.main_random_sfron", "ema beta above 1", lambda i: ic_sfron(i, "--sfron_ema_beta", "2"),
         "argument --sfron_ema_beta: expected a number in [0, 1], got '2'"),
    case("ImageClassification.main_random_sfron", "checkpoint of another arch",
         lambda i: ic_sfron(i, "--arch", "resnet56s"), "checkpoint is a resnet20s, but --arch is resnet56s"),
    case("ImageClassification.main_random_sfron", "unwritable save_dir",
         lambda i: ic_sfron(i, "--save_dir", i.blocked + "/sub"), "--save_dir {i.blocked}/sub: " + UNWRITABLE),
    case("ImageClassification.generate_mask", "zero batch size", lambda i: ic_mask(i, "--batch_size", "0"),
         "argument --batch_size: expected an integer >= 1, got '0'"),
    case("ImageClassification.generate_mask", "missing checkpoint", lambda i: ic_mask(i, "--model_path", i.missing),
         "--model_path {i.missing}: file not found"),
    case("ImageClassification.generate_mask", "checkpoint with another class count",
         lambda i: ic_mask(i, "--model_path", i.ic_model_100), "has shape (100, 64)"),
    case("ImageClassification.generate_mask", "no save_dir", lambda i: IC + ["--model_path", i.ic_model],
         "--save_dir: required"),
    case("ImageClassification.generate_mask", "unwritable save_dir",
         lambda i: ic_mask(i, "--save_dir", i.blocked + "/sub"), "--save_dir {i.blocked}/sub: " + UNWRITABLE),
    case("ImageClassification.parse_result", "nothing matches", lambda i: ["--log_paths", i.missing + "/*.json"],
         "--log_paths {i.missing}/*.json: no file matches"),
    case("ImageClassification.parse_result", "corrupt result", corrupt_eval_result, "eval_result.json: not valid JSON"),
    case("ImageClassification.parse_result", "unknown format", lambda i: ic_results(i, "--format", "xml"),
         "argument --format: invalid choice: 'xml'"),
    case("ImageClassification.parse_result", "reference not numbers",
         lambda i: ic_results(i, "--ref", "1", "2", "3", "four"), "argument --ref: invalid float value: 'four'"),
    case("ImageClassification.parse_result", "unwritable plot",
         lambda i: ic_results(i, "--plot", i.blocked + "/sub/gap.png"), "--plot {i.blocked}/sub: " + UNWRITABLE),
    case("ImageClassification.parse_result", "unknown plot format",
         lambda i: ic_results(i, "--plot", str(i.out / "gap.xyz")), "unsupported file type '.xyz'"),
    case("ImageClassification.demo", "unwritable output folder", lambda i: ["--quick", "--out", i.blocked + "/sub"],
         "--out {i.blocked}/sub: " + UNWRITABLE),
    case("ImageClassification.demo", "unknown flag", lambda i: ["--quick", "--epochs", "3"],
         "unrecognized arguments: --epochs 3"),
    # ---------------------------------------------------------------- LLM
    case("LLM.main_train", "zero epochs", lambda i: llm(i, "--num_epochs", "0"),
         "argument --num_epochs: expected an integer >= 1, got '0'"),
    case("LLM.main_train", "lr not a number", lambda i: llm(i, "--lr", "1e-5x"),
         "argument --lr: expected a number > 0, got '1e-5x'"),
    case("LLM.main_train", "unknown dtype", lambda i: llm(i, "--dtype", "float8"),
         "argument --dtype: invalid choice: 'float8'"),
    case("LLM.main_train", "LoRA dropout of 1", lambda i: llm(i, "--LoRA_dropout", "1"),
         "argument --LoRA_dropout: expected a number in [0, 1), got '1'"),
    case("LLM.main_train", "list for a number in --config",
         lambda i: llm(i, "--config", llm_config(i, "lr: [1, 2]\n")),
         "--config {i.tmp}/config.yaml: lr: expected a number > 0, got [1, 2]"),
    case("LLM.main_train", "non-UTF-8 --config", lambda i: llm(i, "--config", not_utf8(i)),
         "--config {i.tmp}/config.yaml: not UTF-8 text (byte 14: invalid start byte); expected a YAML file"),
    case("LLM.main_train", "weights that run code", lambda i: llm(i, "--model_path", llm_pickled(i)),
         "--model_path {i.tmp}/pickled_llm/pytorch_model.bin" + REFUSED),
    case("LLM.main_forget", "weights that run code", lambda i: llm(i, "--model_path", llm_pickled(i)),
         "--model_path {i.tmp}/pickled_llm/pytorch_model.bin" + REFUSED),
    case("LLM.main_forget", "non-UTF-8 --config", lambda i: llm(i, "--config", not_utf8(i)),
         "--config {i.tmp}/config.yaml: not UTF-8 text"),
    case("LLM.main_forget", "switch that is not a boolean in --config",
         lambda i: llm(i, "--config", llm_config(i, "alternate: maybe\n")),
         "--config {i.tmp}/config.yaml: alternate: expected true or false, got 'maybe'"),
    case("LLM.main_forget", "boolean seed in --config", lambda i: llm(i, "--config", llm_config(i, "seed: true\n")),
         "--config {i.tmp}/config.yaml: seed: expected an integer, got true"),
    case("LLM.main_forget", "unknown choice in --config",
         lambda i: llm(i, "--config", llm_config(i, "dtype: float8\n")),
         "--config {i.tmp}/config.yaml: dtype: invalid choice 'float8' (choose from bfloat16, float16, float32)"),
    case("LLM.forget", "non-UTF-8 --config-name", lambda i: llm(i, "--config-name=" + not_utf8(i)),
         "--config {i.tmp}/config.yaml: not UTF-8 text"),
    case("LLM.eval", "non-UTF-8 --config", lambda i: llm(i, "--config", not_utf8(i)),
         "--config {i.tmp}/config.yaml: not UTF-8 text"),
    case("LLM.real_world_unlearn", "weights that run code", lambda i: real_world(i, "--model_path", llm_pickled(i)),
         "--model_path {i.tmp}/pickled_llm/pytorch_model.bin" + REFUSED),
    case("LLM.main_train", "out-of-range value in --config",
         lambda i: llm(i, "--config", llm_config(i, "num_epochs: -2\n")),
         "--config {i.tmp}/config.yaml: num_epochs: expected an integer >= 1, got -2"),
    case("LLM.main_train", "unknown key in --config", lambda i: llm(i, "--config", llm_config(i, "epochs: 2\n")),
         "unknown option(s) epochs"),
    case("LLM.main_train", "missing --config", lambda i: llm(i, "--config", i.missing),
         "--config {i.missing}: file not found"),
    case("LLM.main_train", "missing data", lambda i: llm(i, "--data_path", i.missing),
         "--data_path {i.missing}: not a folder of TOFU JSON files"),
    case("LLM.main_train", "missing split", lambda i: llm(i, "--split", "retain77"), "no retain77.json"),
    case("LLM.main_train", "missing model", lambda i: llm(i, "--model_path", i.missing),
         "--model_path {i.missing}: folder not found"),
    case("LLM.main_train", "not a causal LM", lambda i: llm(i, "--model_path", i.bert),
         "is not a causal language model"),
    case("LLM.main_train", "unwritable save_dir", lambda i: llm(i, "--save_dir", i.blocked + "/sub"),
         "--save_dir {i.blocked}/sub: " + UNWRITABLE),
    case("LLM.main_forget", "unknown loss", lambda i: llm(i, "--forget_loss", "XX"),
         "--forget_loss: unknown value 'XX'"),
    case("LLM.forget", "unknown hydra key", lambda i: llm(i, "--config-name=phi1-5_tofu.yaml", "nosuch=1"),
         "nosuch=1: unknown key (no --nosuch flag)"),
    case("LLM.forget", "hydra key without an equivalent", lambda i: llm(i, "save_checkpoint=false"),
         "save_checkpoint=false: has no equivalent here (only save_checkpoint=true)"),
    case("LLM.main_forget", "unknown optimizer", lambda i: llm(i, "--optim_cfg", "lion"),
         "--optim_cfg: unknown value 'lion'"),
    case("LLM.main_forget", "unknown split", lambda i: llm(i, "--split", "forget07"),
         "--split: unknown value 'forget07'"),
    case("LLM.main_forget", "accumulation steps not an integer",
         lambda i: llm(i, "--gradient_accumulation_steps", "2.5"),
         "argument --gradient_accumulation_steps: expected an integer >= 1, got '2.5'"),
    case("LLM.main_forget", "negative forget coefficient", lambda i: llm(i, "--forget_coeff", "-1"),
         "argument --forget_coeff: expected a number >= 0, got '-1'"),
    case("LLM.main_forget", "unknown task", lambda i: llm(i, "--task_list", "1,3"),
         "--task_id 3: split forget01 has task ids 1, 2"),
    case("LLM.main_forget", "dual optimizer without --alternate", lambda i: llm(i, "--optim_cfg", "dual_adam"),
         "needs --alternate"),
    case("LLM.main_forget", "--schedule joint beside --alternate",
         lambda i: llm(i, "--schedule", "joint", "--alternate"), "--schedule joint: conflicts with --alternate"),
    case("LLM.main_forget", "--schedule joint, dual optimizer, no retain term",
         lambda i: llm(i, "--schedule", "joint", "--optim_cfg", "dual_adam", "--forget_loss", "GA"),
         "--schedule joint: --forget_loss GA has no retain term"),
    case("LLM.main_forget", "unknown --schedule", lambda i: llm(i, "--schedule", "mixed"),
         "argument --schedule: invalid choice: 'mixed'"),
    case("LLM.main_forget", "missing refusal answers",
         lambda i: llm(i, "--forget_loss", "IDK+AP", "--idk_path", i.missing), "--idk_path {i.missing}: file not found"),
    case("LLM.main_forget", "corrupt data",
         lambda i: llm(i, "--data_path", tofu_copy(i, "forget01.json", '{"question": ')),
         "forget01.json: not valid JSON or JSON lines"),
    case("LLM.main_forget", "not a causal LM", lambda i: llm(i, "--model_path", i.bert),
         "is not a causal language model"),
    case("LLM.main_forget", "unwritable save_dir", lambda i: llm(i, "--save_dir", i.blocked + "/sub"),
         "--save_dir {i.blocked}/sub: " + UNWRITABLE),
    case("LLM.main_forget", "save_steps not a step count", lambda i: llm(i, "--save_steps", "epoch"),
         "argument --save_steps: expected last, steps_per_epoch or a positive number, got 'epoch'"),
    case("LLM.main_forget", "save_steps 0 in --config", lambda i: llm(i, "--config", llm_config(i, "save_steps: 0\n")),
         "--config {i.tmp}/config.yaml: save_steps: expected last, steps_per_epoch or a positive number, got '0'"),
    case("LLM.eval", "step without the run folder", lambda i: llm(i, "--eval_unlearn_step", "50"),
         "--eval_unlearn_step 50: needs --unlearn_dir"),
    case("LLM.eval", "step never saved", lambda i: llm(i, "--unlearn_dir", i.missing, "--eval_unlearn_step", "50"),
         "--unlearn_dir {i.missing}: no checkpoint-50"),
    case("LLM.eval", "broken judge model", lambda i: llm(i, "--nli_model", broken_model(i)),
         "--nli_model {i.tmp}/broken: cannot load the model"),
    case("LLM.eval", "zero batch size", lambda i: llm(i, "--batch_size", "0"),
         "argument --batch_size: expected an integer >= 1, got '0'"),
    case("LLM.eval", "negative ds_size", lambda i: llm(i, "--ds_size", "-5"),
         "argument --ds_size: expected an integer >= 0, got '-5'"),
    case("LLM.eval", "unknown task", lambda i: llm(i, "--task_id", "7"), "--task_id 7"),
    case("LLM.eval", "data lacks a field",
         lambda i: llm(i, "--data_path", tofu_copy(i, "retain_perturbed.json", '{"question": "q", "answer": "a"}\n')),
         "row 0 lacks field(s) perturbed_answer, paraphrased_answer"),
    case("LLM.eval", "missing retain result", lambda i: llm(i, "--retain_result", i.missing),
         "--retain_result {i.missing}: file not found"),
    case("LLM.eval", "retain result of another kind",
         lambda i: llm(i, "--retain_result", str(i.out / "earlier_run.json")),
         "lacks avg_paraphrased_loss, average_perturb_loss"),
    case("LLM.eval", "missing model", lambda i: llm(i, "--model_path", i.missing),
         "--model_path {i.missing}: folder not found"),
    case("LLM.eval", "unwritable save_dir", lambda i: llm(i, "--save_dir", i.blocked + "/sub"),
         "--save_dir {i.blocked}/sub: " + UNWRITABLE),
    case("LLM.parse_result", "missing root", lambda i: ["--root", i.missing], "--root {i.missing}: folder not found"),
    case("LLM.parse_result", "no results", lambda i: ["--root", str(i.tmp / "out")], "no aggregate_stat.json found"),
    case("LLM.parse_result", "unwritable csv", lambda i: llm_results(i, "--save_csv", i.blocked + "/sub/t.csv"),
         "--save_csv {i.blocked}/sub: " + UNWRITABLE),
    case("LLM.parse_result", "unknown plot format", lambda i: llm_results(i, "--plot", str(i.out / "fq.doc")),
         "unsupported file type '.doc'"),
    case("LLM.parse_result", "plot metric no run has", lambda i: llm_results(i, "--plot", str(i.out / "p.png")),
         "--y_metric 'Untargeted Forget Efficacy': no run under --root has it"),
    case("LLM.real_world_unlearn", "negative epochs", lambda i: real_world(i, "--num_epochs", "-1"),
         "argument --num_epochs: expected an integer >= 1, got '-1'"),
    case("LLM.real_world_unlearn", "unknown loss", lambda i: real_world(i, "--forget_loss", "XX"),
         "--forget_loss: unknown value 'XX'"),
    case("LLM.real_world_unlearn", "missing retain set", lambda i: real_world(i, "--retain", "neighbour"),
         "no neighbour.json or neighbour.jsonl"),
    case("LLM.real_world_unlearn", "not a causal LM", lambda i: real_world(i, "--model_path", i.bert),
         "is not a causal language model"),
    case("LLM.real_world_unlearn", "unwritable save_dir", lambda i: real_world(i, "--save_dir", i.blocked + "/sub"),
         "--save_dir {i.blocked}/sub: " + UNWRITABLE),
    case("LLM.real_world_eval", "bad step", lambda i: real_world(i, "--eval_unlearn_step", "best"),
         "--eval_unlearn_step 'best': expected last, 0 or a step number"),
    case("LLM.real_world_eval", "no unlearned model", lambda i: real_world(i),
         "--save_dir {i.out}: no checkpoint-last"),
    case("LLM.real_world_eval", "zero batch size", lambda i: real_world(i, "--batch_size", "0"),
         "argument --batch_size: expected an integer >= 1, got '0'"),
    case("LLM.real_world_eval", "missing perturbed set", lambda i: real_world(i, "--split", "forgotten"),
         "no forgotten_perturbed.json"),
    case("LLM.real_world_eval", "unwritable save_dir",
         lambda i: real_world(i, "--eval_unlearn_step", "0", "--save_dir", i.blocked + "/sub"),
         "--save_dir {i.blocked}/sub/eval_results-0: " + UNWRITABLE),
    # ---------------------------------------------------------------- DDPM
    case("ImageGeneration.DDPM.main_train", "unknown mode", lambda i: ddpm_train(i, "--mode", "finetune"),
         "--mode 'finetune': expected pretrain or retrain"),
    case("ImageGeneration.DDPM.main_train", "unknown dataset", lambda i: ddpm_train(i, "--dataset", "mnist"),
         "argument --dataset: invalid choice: 'mnist'"),
    case("ImageGeneration.DDPM.main_train", "seed not an integer", lambda i: ddpm_train(i, "--seed", "one"),
         "argument --seed: invalid int value: 'one'"),
    case("ImageGeneration.DDPM.main_train", "class out of range",
         lambda i: ddpm_train(i, "--mode", "retrain", "--label_to_forget", "12"),
         "--label_to_forget 12: expected a class in [0, 9]"),
    case("ImageGeneration.DDPM.main_train", "missing config", lambda i: ddpm_train(i, "--config", i.missing),
         "--config {i.missing}: file not found"),
    case("ImageGeneration.DDPM.main_train", "config without a training section",
         lambda i: ddpm_train(i, "--config", llm_config(i, "data: {}\nmodel: {}\ndiffusion: {}\n")),
         "missing the 'training:' section"),
    case("ImageGeneration.DDPM.main_train", "missing data",
         lambda i: ddpm_train(i, "--dataset", "cifar10", "--data_path", i.missing), "--data_path {i.missing}"),
    case("ImageGeneration.DDPM.main_train", "unwritable exp_root",
         lambda i: ddpm_train(i, "--exp_root", i.blocked + "/sub"), "--exp_root {i.blocked}/sub/results/digits/pretrain: "
         + UNWRITABLE),
    case("ImageGeneration.DDPM.main_train", "non-UTF-8 config",
         lambda i: ddpm_train(i, "--config", not_utf8(i, "d.yml")),
         "--config {i.tmp}/d.yml: not UTF-8 text (byte 14: invalid start byte); expected a YAML file"),
    case("ImageGeneration.DDPM.main_train", "list for a number in the config",
         lambda i: ddpm_train(i, "--config", ddpm_config_text(i, "optim", "lr", "[1, 2]")),
         "--config {i.tmp}/ddpm.yml: optim.lr: expected a number > 0, got [1, 2]"),
    case("ImageGeneration.DDPM.main_train", "quoted boolean in the config",
         lambda i: ddpm_train(i, "--config", ddpm_config_text(i, "data", "random_flip", '"false"')),
         "--config {i.tmp}/ddpm.yml: data.random_flip: expected true or false, got 'false'"),
    case("ImageGeneration.DDPM.main_train", "boolean batch size in the config",
         lambda i: ddpm_train(i, "--config", ddpm_config_text(i, "training", "batch_size", "true")),
         "--config {i.tmp}/ddpm.yml: training.batch_size: expected an integer >= 1, got true"),
    case("ImageGeneration.DDPM.main_train", "resume over a snapshot that runs code", ddpm_resume_over_unsafe_snapshot,
         "--resume {i.out}/results/digits/pretrain/2020_01_01_000000/resume_state.pt" + REFUSED),
    case("ImageGeneration.DDPM.main_train", "unknown network",
         lambda i: ddpm_train(i, "--config", ddpm_config_with(i, network="resnet")),
         "--config {i.tmp}/ddpm.yml: model.network: invalid choice 'resnet' (choose from conditional_model, unet2d)"),
    case("ImageGeneration.DDPM.main_train", "unet2d without conv resampling",
         lambda i: ddpm_train(i, "--config", ddpm_config_with(i, resamp_with_conv=False)),
         "--config {i.tmp}/ddpm.yml: model.network unet2d always resamples with convolutions"),
    case("ImageGeneration.DDPM.main_forget", "unknown mode", lambda i: ddpm_forget(i, "--mode", "bogus"),
         "--mode 'bogus': expected one of"),
    case("ImageGeneration.DDPM.main_forget", "unknown optimizer recipe", lambda i: ddpm_forget(i, "--optim", "bogus"),
         "--optim: unknown value 'bogus'; expected one of"),
    case("ImageGeneration.DDPM.main_forget", "--dual with another recipe",
         lambda i: ddpm_forget(i, "--optim", "dual_sa", "--dual"), "--dual: means --optim dual_native"),
    case("ImageGeneration.DDPM.main_forget", "zero forget lr", lambda i: ddpm_forget(i, "--forget_lr", "0"),
         "argument --forget_lr: expected a number > 0, got '0'"),
    case("ImageGeneration.DDPM.main_forget", "negative forget alpha", lambda i: ddpm_forget(i, "--forget_alpha", "-1"),
         "argument --forget_alpha: expected a number >= 0, got '-1'"),
    case("ImageGeneration.DDPM.main_forget", "unknown loss", lambda i: ddpm_forget(i, "--unlearn_loss", "xx"),
         "--unlearn_loss: unknown value 'xx'"),
    case("ImageGeneration.DDPM.main_forget", "missing run folder", lambda i: ddpm_forget(i, "--ckpt_folder", i.missing),
         "--ckpt_folder {i.missing}: folder not found"),
    case("ImageGeneration.DDPM.main_forget", "run folder without checkpoint",
         lambda i: ddpm_forget(i, "--ckpt_folder", str(i.out)), "no checkpoint at ckpts/ckpt.pth"),
    case("ImageGeneration.DDPM.main_forget", "checkpoint of another dataset",
         lambda i: ddpm_forget(i, "--dataset", "cifar10"), "--dataset cifar10: the checkpoint was trained on digits"),
    case("ImageGeneration.DDPM.main_forget", "class out of range", lambda i: ddpm_forget(i, "--label_to_forget", "10"),
         "--label_to_forget 10: expected a class in [0, 9]"),
    case("ImageGeneration.DDPM.main_forget", "mask of another model",
         lambda i: ddpm_forget(i, "--mask_path", i.ddpm_bad_mask), "--mask_path {i.ddpm_bad_mask}: key 'conv_in.weight' has shape (3, 3)"),
    case("ImageGeneration.DDPM.main_forget", "selective amnesia without its Fisher",
         lambda i: ddpm_forget(i, "--mode", "sa"), "--mode sa needs fisher_dict.pt"),
    case("ImageGeneration.DDPM.main_forget", "unwritable exp_root",
         lambda i: ddpm_forget(i, "--exp_root", i.blocked + "/sub"),
         "--exp_root {i.blocked}/sub/results/digits/forget_0/ ... : " + UNWRITABLE),
    case("ImageGeneration.DDPM.generate_mask", "unknown mode", lambda i: ddpm_mask(i, "--mode", "fisher"),
         "--mode 'fisher': expected one of salun, sfron, sa_fim"),
    case("ImageGeneration.DDPM.generate_mask", "salun threshold above 1", lambda i: ddpm_mask(i, "--threshold", "2"),
         "--threshold: salun keeps a fraction of weights, expected values in [0, 1]"),
    case("ImageGeneration.DDPM.generate_mask", "negative threshold",
         lambda i: ddpm_mask(i, "--mode", "sfron", "--threshold", "1", "-1"),
         "argument --threshold: expected a number >= 0, got '-1'"),
    case("ImageGeneration.DDPM.generate_mask", "zero timesteps",
         lambda i: ddpm_mask(i, "--mode", "sa_fim", "--fim_timesteps", "0"),
         "argument --fim_timesteps: expected an integer >= 1, got '0'"),
    case("ImageGeneration.DDPM.generate_mask", "stored Fishers over different parameters",
         lambda i: ["--ckpt_folder", stored_fishers(i), "--mode", "sfron", *CPU],
         "--ckpt_folder {i.tmp}: forget_fisher.pt and remain_fisher.pt cover different parameters"),
    case("ImageGeneration.DDPM.generate_mask", "truncated stored Fisher",
         lambda i: ["--ckpt_folder", stored_fishers(i, remain_key="a", corrupt_forget=True), *CPU],
         "--ckpt_folder {i.tmp}/forget_fisher.pt: "),
    case("ImageGeneration.DDPM.generate_mask", "no generated samples", lambda i: ddpm(i, "--mode", "sa_fim"),
         "no class_samples/<label>/ folders"),
    case("ImageGeneration.DDPM.generate_mask", "unwritable save_dir",
         lambda i: ddpm_mask(i, "--save_dir", i.blocked + "/sub"), "--save_dir {i.blocked}/sub: " + UNWRITABLE),
    case("ImageGeneration.DDPM.sample", "checkpoint weights that are not tensors",
         lambda i: ddpm(i, "--ckpt_folder", ddpm_run_with_weights(i, {"conv_in.weight": 1.5})),
         "ckpts/ckpt.pth ('model'): state dict entry 'conv_in.weight' is a float, expected a tensor"),
    case("ImageGeneration.DDPM.generate_mask", "stored Fisher that runs code",
         lambda i: ["--ckpt_folder", fishers_that_run_code(i), *CPU],
         "--ckpt_folder {i.tmp}/forget_fisher.pt" + REFUSED),
    case("ImageGeneration.DDPM.train_classifier", "pretrained weights that are not a state dict",
         lambda i: ["--arch", "resnet34", "--dataset", "cifar10", "--data_path", i.missing, "--pretrained_weights",
                    torch_file(i, "w.pth", [torch.ones(1)]), "--save_dir", str(i.out), *CPU],
         "--pretrained_weights {i.tmp}/w.pth: not torchvision's ImageNet resnet34 state dict"),
    case("ImageGeneration.DDPM.train_classifier", "pretrained weights for a judge without any",
         lambda i: ["--pretrained_weights", torch_file(i, "w.pth", {"w": torch.ones(1)}), "--save_dir", str(i.out),
                    *CPU], "--pretrained_weights: small_cnn has no ImageNet weights (resnet34 has)"),
    case("ImageGeneration.DDPM.train_classifier", "ImageNet weights for grayscale digits",
         lambda i: ["--arch", "resnet34", "--save_dir", str(i.out), *CPU],
         "--arch resnet34: its ImageNet weights take RGB images; --dataset digits is grayscale"),
    case("ImageGeneration.DiT.classifier_evaluation", "weights that run code",
         lambda i: dit_judge(i, "--classifier-weights", malicious_checkpoint(i)),
         "--classifier-weights {i.tmp}/found_online.pth.tar" + REFUSED),
    case("ImageGeneration.DDPM.sample", "unknown mode", lambda i: ddpm(i, "--mode", "sample_all"),
         "--mode 'sample_all': expected one of sample_classes, sample_fid"),
    case("ImageGeneration.DDPM.sample", "unknown sampler", lambda i: ddpm(i, "--sample_type", "euler"),
         "--sample_type 'euler': expected one of"),
    case("ImageGeneration.DDPM.sample", "zero samples", lambda i: ddpm(i, "--n_samples_per_class", "0"),
         "argument --n_samples_per_class: expected an integer >= 1, got '0'"),
    case("ImageGeneration.DDPM.sample", "negative eta", lambda i: ddpm(i, "--eta", "-0.5"),
         "argument --eta: expected a number >= 0, got '-0.5'"),
    case("ImageGeneration.DDPM.sample", "more steps than the model", lambda i: ddpm(i, "--timesteps", "50"),
         "--timesteps 50: expected 1..10"),
    case("ImageGeneration.DDPM.sample", "class out of range", lambda i: ddpm(i, "--classes_to_generate", "12"),
         "--classes_to_generate: class 12 is out of range for a model of 10 classes"),
    case("ImageGeneration.DDPM.sample", "class never trained",
         lambda i: ddpm(i, "--classes_to_generate", "0", run=i.ddpm_retrain_run), "never trained on class(es) [0]"),
    case("ImageGeneration.DDPM.sample", "research checkpoint of another network",
         lambda i: ddpm(i, "--ckpt_folder", research_ddpm_run(i)),
         "--ckpt_folder {i.tmp}/run/ckpts/ckpt.pth: weights do not fit the network of --config "
         "(model.network unet2d) (Error(s) in loading state_dict for UNet2DModel"),
    case("ImageGeneration.DDPM.sample", "research checkpoint list cut short",
         lambda i: ddpm(i, "--ckpt_folder", research_ddpm_run(i, entries=2)),
         "--ckpt_folder {i.tmp}/run/ckpts/ckpt.pth: a list checkpoint must be the research code's "
         "[model, optimizer, step] or [model, optimizer, step, ema], got 2 entries"),
    case("ImageGeneration.DDPM.generate_mask", "research checkpoint without a config",
         lambda i: ["--ckpt_folder", research_ddpm_run(i), "--mode", "salun", *CPU],
         "--ckpt_folder {i.tmp}/run: a research-code checkpoint carries no config; give --config (the YAML it was "
         "trained with) or --dataset"),
    case("ImageGeneration.DDPM.sample", "corrupt checkpoint", lambda i: ddpm(i, "--ckpt_folder", corrupt_run(i)),
         "ckpt.pth: cannot be read as a torch checkpoint"),
    case("ImageGeneration.DDPM.train_classifier", "zero epochs", lambda i: ["--n_epochs", "0", *CPU],
         "argument --n_epochs: expected an integer >= 1, got '0'"),
    case("ImageGeneration.DDPM.train_classifier", "negative lr", lambda i: ["--lr", "-0.001", *CPU],
         "argument --lr: expected a number > 0, got '-0.001'"),
    case("ImageGeneration.DDPM.train_classifier", "lr that looks like a flag", lambda i: ["--lr", "-1e-3", *CPU],
         "argument --lr: expected one argument"),
    case("ImageGeneration.DDPM.train_classifier", "unknown arch", lambda i: ["--arch", "vgg", *CPU],
         "--arch: unknown value 'vgg'"),
    case("ImageGeneration.DDPM.train_classifier", "missing data",
         lambda i: ["--dataset", "cifar10", "--from_scratch", *CPU], "--data_path: required for --dataset cifar10"),
    case("ImageGeneration.DDPM.train_classifier", "no ImageNet weights for the cifar10 judge",
         lambda i: ["--dataset", "cifar10", "--data_path", i.missing, *CPU],
         "--arch resnet34: starts from ImageNet-pretrained weights, as the research code; put torchvision's "
         "resnet34-b627a593.pth at ... or pass --pretrained_weights PATH (--from_scratch: random initialisation)"),
    case("ImageGeneration.DDPM.train_classifier", "weights of another network",
         lambda i: ["--arch", "resnet34", "--dataset", "cifar10", "--data_path", i.missing, "--pretrained_weights",
                    i.dit_classifier, "--save_dir", str(i.out), *CPU],
         "--pretrained_weights {i.dit_classifier}: not torchvision's ImageNet resnet34 state dict"),
    case("ImageGeneration.DDPM.train_classifier", "unwritable save_dir",
         lambda i: ["--save_dir", i.blocked + "/sub", *CPU], "--save_dir {i.blocked}/sub: " + UNWRITABLE),
    case("ImageGeneration.DDPM.save_base_dataset", "unknown dataset", lambda i: ["--dataset", "mnist"],
         "argument --dataset: invalid choice: 'mnist'"),
    case("ImageGeneration.DDPM.save_base_dataset", "class out of range",
         lambda i: ["--dataset", "digits", "--label_to_forget", "10", "--save_path", str(i.out)],
         "--label_to_forget 10"),
    case("ImageGeneration.DDPM.save_base_dataset", "missing data", lambda i: ["--dataset", "cifar10"],
         "--data_path: required for --dataset cifar10"),
    case("ImageGeneration.DDPM.save_base_dataset", "unwritable save_path",
         lambda i: ["--dataset", "digits", "--save_path", i.blocked + "/sub"], "--save_path {i.blocked}/sub"),
    case("ImageGeneration.DDPM.classifier_evaluation", "missing samples",
         lambda i: classifier_eval(i, "--sample_path", i.missing), "--sample_path {i.missing}: folder not found"),
    case("ImageGeneration.DDPM.classifier_evaluation", "no classifier in the folder",
         lambda i: classifier_eval(i, "--ckpt_path", str(i.out)), "expected exactly one <dataset>_<arch>.pth"),
    case("ImageGeneration.DDPM.classifier_evaluation", "corrupt classifier",
         lambda i: classifier_eval(i, "--ckpt_path", i.corrupt), "cannot be read as a torch checkpoint"),
    case("ImageGeneration.DDPM.classifier_evaluation", "class out of range",
         lambda i: classifier_eval(i, "--label_of_forgotten_class", "10"),
         "--label_of_forgotten_class 10: expected a class in [0, 9]"),
    case("ImageGeneration.DDPM.classifier_evaluation", "zero batch size", lambda i: classifier_eval(i, "-b", "0"),
         "argument -b/--batch-size: expected an integer >= 1, got '0'"),
    case("ImageGeneration.DDPM.evaluator", "missing samples", lambda i: fid(i)[1:] + [i.missing],
         "sample_dir {i.missing}: folder not found"),
    case("ImageGeneration.DDPM.evaluator", "unknown features", lambda i: fid(i, "--features", "clip"),
         "--features: unknown value 'clip'"),
    case("ImageGeneration.DDPM.evaluator", "two references", lambda i: fid(i)[:1] + [i.gray_samples] + fid(i)[1:],
         "give exactly one of ref_dir"),
    case("ImageGeneration.DDPM.evaluator", "KID subset of one", lambda i: fid(i, "--kid_subset_size", "1"),
         "argument --kid_subset_size: expected an integer >= 2, got '1'"),
    case("ImageGeneration.DDPM.evaluator", "zero neighbourhood", lambda i: fid(i, "--nhood_size", "0"),
         "argument --nhood_size: expected an integer >= 1, got '0'"),
    case("ImageGeneration.DDPM.evaluator", "too few samples for the k-NN balls",
         lambda i: fid(i, "--nhood_size", "4"), "--nhood_size 4: precision/recall need more than 4 images in each "
         "set, got 4 samples and"),
    case("ImageGeneration.DDPM.evaluator", "classifier features without a classifier",
         lambda i: fid(i, "--features", "classifier"), "--classifier_path: required with --features classifier"),
    case("ImageGeneration.DDPM.evaluator", "foreign Inception weights",
         lambda i: fid(i, "--features", "inception", "--inception_weights", i.dit_classifier),
         "not Inception-v3 weights"),
    case("ImageGeneration.DDPM.evaluator", "class out of range", lambda i: fid(i, "--label_to_forget", "10"),
         "--label_to_forget 10: expected a class in [0, 9]"),
    # ---------------------------------------------------------------- DiT
    case("ImageGeneration.DiT.main_forget", "resume over a snapshot that runs code", dit_resume_over_unsafe_snapshot,
         "--resume {i.out}/000-DiT-XL-2-forget-1-ron-ga-lr1e-05-f1.0-r1.0/resume_state.pt" + REFUSED),
    case("ImageGeneration.DiT.main_forget", "transformer weights that run code",
         lambda i: dit_forget(i, "--ckpt", dit_pickled(i, "transformer")),
         "--ckpt {i.tmp}/pickled_dit/transformer/diffusion_pytorch_model.bin" + REFUSED),
    case("ImageGeneration.DiT.sample", "transformer weights that run code",
         lambda i: dit_sample(i, "--ckpt", dit_pickled(i, "transformer")),
         "--ckpt {i.tmp}/pickled_dit/transformer/diffusion_pytorch_model.bin" + REFUSED),
    case("ImageGeneration.DiT.sample", "vae weights that run code",
         lambda i: dit_sample(i, "--vae", dit_pickled(i, "vae")),
         "--vae {i.tmp}/pickled_dit/vae/diffusion_pytorch_model.bin" + REFUSED),
    case("ImageGeneration.DiT.sample", "unlearned transformer that runs code",
         lambda i: dit_sample(i, "--transformer-path", dit_pickled(i, "transformer") + "/transformer"),
         "--transformer-path {i.tmp}/pickled_dit/transformer/diffusion_pytorch_model.bin" + REFUSED),
    case("ImageGeneration.DiT.main_forget", "unknown optimizer recipe", lambda i: dit_forget(i, "--optim", "bogus"),
         "--optim: unknown value 'bogus'; expected one of"),
    case("ImageGeneration.DiT.main_forget", "method with inputs the DiT lacks", lambda i: dit_forget(i, "--mode", "sa"),
         "--mode 'sa': expected one of"),
    case("ImageGeneration.DiT.main_forget", "unknown loss", lambda i: dit_forget(i, "--unlearn-loss", "xx"),
         "--unlearn-loss 'xx': expected one of ga, rl, adaga"),
    case("ImageGeneration.DiT.main_forget", "unknown method", lambda i: dit_forget(i, "--method", "xx"),
         "--method 'xx': expected one of ron, joint"),
    case("ImageGeneration.DiT.main_forget", "zero iterations", lambda i: dit_forget(i, "--n-iters", "0"),
         "argument --n-iters: expected an integer >= 1, got '0'"),
    case("ImageGeneration.DiT.main_forget", "negative workers", lambda i: dit_forget(i, "--num-workers", "-1"),
         "argument --num-workers: expected an integer >= 0, got '-1'"),
    case("ImageGeneration.DiT.main_forget", "missing checkpoint", lambda i: dit_forget(i, "--ckpt", str(i.out)),
         "--ckpt {i.out}: no 'transformer/' folder"),
    case("ImageGeneration.DiT.main_forget", "missing data", lambda i: dit_forget(i, "--data-path", i.missing),
         "--data-path {i.missing}: folder not found"),
    case("ImageGeneration.DiT.main_forget", "class out of range", lambda i: dit_forget(i, "--forget-class", "5"),
         "--forget-class 5: expected a class in [0, 2]"),
    case("ImageGeneration.DiT.main_forget", "mask of another model",
         lambda i: dit_forget(i, "--mask-path", i.dit_bad_mask), "--mask-path {i.dit_bad_mask}: key 'proj_out_2.weight' has shape (1,)"),
    case("ImageGeneration.DiT.main_forget", "unwritable results-dir",
         lambda i: dit_forget(i, "--results-dir", i.blocked + "/sub"), "--results-dir {i.blocked}/sub: " + UNWRITABLE),
    case("ImageGeneration.DiT.generate_mask", "unknown method", lambda i: dit_mask(i, "--method", "fisher"),
         "--method 'fisher': expected one of sfron, salun"),
    case("ImageGeneration.DiT.generate_mask", "salun threshold above 1",
         lambda i: dit_mask(i, "--method", "salun", "--thresholds", "0.5", "3"),
         "--thresholds: salun keeps a fraction of weights"),
    case("ImageGeneration.DiT.generate_mask", "second class out of range",
         lambda i: dit_mask(i, "--forget-class", "1", "7"), "--forget-class 7: expected a class in [0, 2]"),
    case("ImageGeneration.DiT.generate_mask", "nothing stored and no data",
         lambda i: [a for a in dit_mask(i) if a not in ("--data-path", i.dit_data)],
         "--data-path: required to compute the Fisher diagonals of class 1"),
    case("ImageGeneration.DiT.generate_mask", "zero batch size", lambda i: dit_mask(i, "--batch-size", "0"),
         "argument --batch-size: expected an integer >= 1, got '0'"),
    case("ImageGeneration.DiT.generate_mask", "unwritable mask-path",
         lambda i: dit_mask(i, "--mask-path", i.blocked + "/sub"), "--mask-path {i.blocked}/sub/1: " + UNWRITABLE),
    case("ImageGeneration.DiT.sample", "unknown sampler", lambda i: dit_sample(i, "--sample-type", "euler"),
         "--sample-type 'euler': expected one of"),
    case("ImageGeneration.DiT.sample", "more steps than the model", lambda i: dit_sample(i, "--num-sampling-steps",
                                                                                      "5000"),
         "--num-sampling-steps 5000: expected 1..1000"),
    case("ImageGeneration.DiT.sample", "negative guidance", lambda i: dit_sample(i, "--cfg-scale", "-2"),
         "argument --cfg-scale: expected a number >= 0, got '-2'"),
    case("ImageGeneration.DiT.sample", "class out of range", lambda i: dit_sample(i, "--class-labels", "1", "3"),
         "--class-labels 3: expected a class in [0, 2]"),
    case("ImageGeneration.DiT.sample", "missing transformer", lambda i: dit_sample(i, "--transformer-path", i.missing),
         "--transformer-path {i.missing}"),
    case("ImageGeneration.DiT.sample", "unwritable sample-dir", lambda i: dit_sample(i, "--sample-dir",
                                                                                  i.blocked + "/sub"),
         "--sample-dir {i.blocked}/sub: " + UNWRITABLE),
    case("ImageGeneration.DiT.sample", "guided channels zero", lambda i: dit_sample(i, "--cfg-channels", "0"),
         "argument --cfg-channels: expected an integer >= 1, got '0'"),
    case("ImageGeneration.DiT.sample", "more guided channels than latent ones",
         lambda i: dit_sample(i, "--cfg-channels", "5"), "--cfg-channels 5: expected 1..4 (the DiT's latent channels)"),
    case("ImageGeneration.DiT.sample", "missing vae", lambda i: dit_sample(i, "--vae", i.missing),
         "--vae {i.missing}: cannot load the vae"),
    case("ImageGeneration.DiT.sample_ddp", "zero batch size", lambda i: dit_sample_ddp(i, "--per-proc-batch-size", "0"),
         "argument --per-proc-batch-size: expected an integer >= 1, got '0'"),
    case("ImageGeneration.DiT.sample_ddp", "zero samples", lambda i: dit_sample_ddp(i, "--num-fid-samples", "0"),
         "argument --num-fid-samples: expected an integer >= 1, got '0'"),
    case("ImageGeneration.DiT.sample_ddp", "guidance below 1", lambda i: dit_sample_ddp(i, "--cfg-scale", "0.5"),
         "--cfg-scale 0.5: expected a number >= 1 (1: no guidance)"),
    case("ImageGeneration.DiT.sample_ddp", "class below -1", lambda i: dit_sample_ddp(i, "--only_class", "-2"),
         "argument --only_class: expected an integer >= -1, got '-2'"),
    case("ImageGeneration.DiT.sample_ddp", "class out of range", lambda i: dit_sample_ddp(i, "--exclude_class", "3"),
         "--exclude_class 3: expected a class in [0, 2]"),
    case("ImageGeneration.DiT.sample_ddp", "only and exclude",
         lambda i: dit_sample_ddp(i, "--only_class", "0", "--exclude_class", "1"),
         "--only_class/--exclude_class: give at most one"),
    case("ImageGeneration.DiT.sample_ddp", "unknown sampler", lambda i: dit_sample_ddp(i, "--sample-type", "euler"),
         "--sample-type 'euler': expected one of learned_range, generalized, ddpm_noisy"),
    case("ImageGeneration.DiT.sample_ddp", "unwritable sample-dir",
         lambda i: dit_sample_ddp(i, "--sample-dir", i.blocked + "/sub"),
         "--sample-dir {i.blocked}/sub: " + UNWRITABLE),
    case("ImageGeneration.DiT.classifier_evaluation", "unknown arch", lambda i: dit_judge(i, "--arch", "resnet9000"),
         "--arch 'resnet9000': not a torchvision classification model"),
    case("ImageGeneration.DiT.classifier_evaluation", "class out of range", lambda i: dit_judge(i, "--forget-class",
                                                                                             "3"),
         "--forget-class 3: expected a class in [0, 2]"),
    case("ImageGeneration.DiT.classifier_evaluation", "weights of another class count",
         lambda i: dit_judge(i, "--num-classes", "5"), "does not fit shufflenet_v2_x0_5 with 5 classes"),
    case("ImageGeneration.DiT.classifier_evaluation", "missing weights",
         lambda i: dit_judge(i, "--classifier-weights", i.missing), "--classifier-weights {i.missing}: file not found"),
    case("ImageGeneration.DiT.classifier_evaluation", "missing samples", lambda i: dit_judge(i, "--sample-path",
                                                                                          i.missing),
         "--sample-path {i.missing}: folder not found"),
    case("ImageGeneration.DiT.classifier_evaluation", "zero image size", lambda i: dit_judge(i, "--image-size", "0"),
         "argument --image-size: expected an integer >= 1, got '0'"),
]


def entry_scripts() -> List[str]:
    """Every entry script (a module run as a program) of the four script folders, as a module name."""
    names = []
    for folder in ("ImageClassification", "LLM", "ImageGeneration/DDPM", "ImageGeneration/DiT"):
        for path in sorted((REPO / folder).glob("*.py")):
            if 'if __name__ == "__main__":' in path.read_text(encoding="utf-8"):
                names.append(f"{folder.replace('/', '.')}.{path.stem}")
    return names


def test_the_table_covers_every_entry_script():
    assert {c.module for c in CASES} == set(entry_scripts())
    assert len(entry_scripts()) == 28
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("bad", CASES, ids=lambda c: c.id)
def test_bad_input_fails_with_one_line_and_writes_nothing(bad: Case, inputs: Inputs, capsys):
    argv = bad.argv(inputs)  # may write the case's broken input files into inputs.tmp
    roots = (inputs.tmp, *inputs.shared_roots)
    before = snapshot(roots)
    main = importlib.import_module(bad.module).main
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert exit_info.value.code == 2, captured.err
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert re.search(".*".join(map(re.escape, bad.message.format(i=inputs).split(" ... "))), lines[0]), lines[0]
    assert snapshot(roots) == before


PROGRAM_CASES = [
    ("ImageClassification/main_train.py", lambda i: ic_train(i, "--epochs", "-1"),
     "argument --epochs: expected an integer >= 1, got '-1'"),
    ("ImageClassification/demo.py", lambda i: ["--out", i.blocked + "/sub"], "--out {i.blocked}/sub: " + UNWRITABLE),
    ("LLM/parse_result.py", lambda i: ["--root", i.missing], "--root {i.missing}: folder not found"),
]


@pytest.mark.parametrize("script,argv,message", PROGRAM_CASES, ids=[c[0] for c in PROGRAM_CASES])
def test_as_a_program_one_line_and_exit_status_2(script, argv, message, inputs):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, str(REPO / script), *argv(inputs)], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message.format(i=inputs) in lines[0], result.stderr
    assert result.stdout == ""


#: The flags that name a case's output folder; a refused run must not create it (issue 25, item 4).
OUTPUT_FLAGS = ("--save_dir", "--exp_root", "--results-dir", "--sample-dir", "--sample_dir", "--save_path",
                "--mask-path", "--out", "--output_dir")


def fresh_output_case(bad: Case) -> bool:
    """Cases refused after the command line was read, whose output folder is ``i.out`` only as a place to write."""
    return not bad.message.startswith("argument ") and "{i.out}" not in bad.message


#: Cases run with a fresh output folder in the default suite: those that created it before refusing
#: (reproduced), one per modality; ``-m slow`` runs every eligible case.
FRESH_OUTPUT_DEFAULT = {"IC.main_train: SAM with float16 loss scaling", "IC.main_random_sfron: adam with momentum 1",
                        "LLM.main_train: weights that run code", "LLM.main_forget: weights that run code",
                        "DiT.main_forget: transformer weights that run code"}


@pytest.mark.parametrize("bad", [pytest.param(c, marks=() if c.id in FRESH_OUTPUT_DEFAULT else pytest.mark.slow)
                                 for c in CASES if fresh_output_case(c)], ids=lambda c: c.id)
def test_a_refused_run_does_not_create_its_output_folder(bad: Case, inputs: Inputs, capsys):
    argv = bad.argv(inputs)
    at = [k + 1 for k, token in enumerate(argv[:-1]) if token in OUTPUT_FLAGS and argv[k + 1] == str(inputs.out)]
    if not at or sorted(p.name for p in inputs.out.iterdir()) != ["earlier_run.json"]:
        pytest.skip("the case's output folder is part of what it tests")
    fresh = inputs.tmp / "fresh" / "out"
    argv[at[0]] = str(fresh)
    roots = (inputs.tmp, *inputs.shared_roots)
    before = snapshot(roots)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module(bad.module).main(argv)
    lines = capsys.readouterr().err.splitlines()
    assert exit_info.value.code == 2 and len(lines) == 1 and lines[0].startswith("error: "), lines
    assert not (inputs.tmp / "fresh").exists(), sorted(map(str, (inputs.tmp / "fresh").rglob("*")))
    assert snapshot(roots) == before


@pytest.mark.parametrize("module,argv", [
    ("ImageGeneration.DDPM.main_train", lambda i, out: ddpm_train(i, "--exp_root", out)),
    ("ImageGeneration.DiT.main_forget", lambda i, out: dit_forget(i, "--results-dir", out)),
    ("ImageClassification.main_random", lambda i, out: ic_unlearn(i, "--save_dir", out)),
    ("LLM.main_train", lambda i, out: llm(i, "--save_dir", out)),
], ids=lambda v: v if isinstance(v, str) else "")
def test_a_missing_tracker_package_is_refused_before_anything_is_written(module, argv, inputs, monkeypatch, capsys):
    """Reproduced: DDPM and DiT runs refused for a missing tracker left a run folder with its log and config."""
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if wandb were not installed
    fresh = inputs.tmp / "fresh"
    before = snapshot((inputs.tmp,))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module(module).main(argv(inputs, str(fresh)) + ["--report_to", "wandb"])
    lines = capsys.readouterr().err.splitlines()
    assert exit_info.value.code == 2 and len(lines) == 1, lines
    assert lines[0].endswith("argument --report_to: wandb needs the wandb package (pip install wandb)")
    assert not fresh.exists() and snapshot((inputs.tmp,)) == before
