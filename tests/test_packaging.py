"""A regular install is the library alone, under its own name; it imports and steps from any folder."""
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
RESEARCH_PACKAGES = ("common", "ImageClassification", "LLM", "ImageGeneration")


def test_a_regular_install_holds_only_dualoptim_which_imports_from_an_empty_folder(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    for name in ("dualoptim", *RESEARCH_PACKAGES):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path / "wheel"), str(source)], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-2000:]
    wheel, = (tmp_path / "wheel").glob("dualoptim-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        top_level = {name.split("/")[0] for name in archive.namelist()}
        archive.extractall(tmp_path / "site")
    assert top_level == {"dualoptim", wheel.name.split("-py3")[0] + ".dist-info"}

    # the installed package from an empty folder, without this checkout's editable path (-S skips .pth files)
    empty = tmp_path / "empty"
    empty.mkdir()
    script = (
        "import importlib.util, torch\n"
        "from dualoptim import DualOptim, DecoupledAdamW, make_unlearn_optimizer, set_objective\n"
        "assert all(importlib.util.find_spec(name) is None for name in %r)\n"
        "w = torch.nn.Parameter(torch.ones(2))\n"
        "opt = make_unlearn_optimizer('dual', [w], unlearn_lr=0.1, retain_lr=0.5, momentum=0.0, weight_decay=0.0)\n"
        "w.grad = torch.ones(2); opt.retain_step()\n"
        "print(opt.is_dual, [round(v, 6) for v in w.tolist()])\n" % (RESEARCH_PACKAGES,))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), str(Path(torch.__file__).parents[1])])}
    ran = subprocess.run([sys.executable, "-S", "-c", script], cwd=empty, env=env, capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert ran.stdout.split() == ["True", "[0.5,", "0.5]"]  # one plain SGD retain step: 1 - 0.5 * 1
