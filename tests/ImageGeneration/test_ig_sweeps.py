"""scripts/ImageGeneration's sweeps: with LAUNCHER unset they run their commands here in the original order;
with LAUNCHER=slurm the masks go as one batch of jobs before the unlearning runs (a dry run against the fake
SLURM commands of tests/fake_slurm)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts" / "ImageGeneration"
FAKE_SLURM = REPO / "tests" / "fake_slurm"


def recorded_commands(tmp_path: Path, script: str, *args: str):
    """The commands ``script`` starts with LAUNCHER unset, through a ``python`` that only records them."""
    bin_dir, record = tmp_path / "bin", tmp_path / "commands.txt"
    bin_dir.mkdir()
    (bin_dir / "python").write_text(f'#!/bin/bash\necho "$*" >> {record}\n')
    (bin_dir / "python").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("LAUNCHER", "SAVE_DIR")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    result = subprocess.run(["bash", str(SCRIPTS / script), *args], env=env, capture_output=True, text=True,
                            cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    return record.read_text().splitlines()


def test_without_launcher_the_ddpm_sweep_runs_each_class_in_turn(tmp_path):
    mask = ("-m ImageGeneration.DDPM.generate_mask --dataset cifar10 --data_path data --config cifar10_fisher.yml "
            "--ckpt_folder ckpt --mode sfron --label_to_forget {c} --threshold 1.0")
    common = ("-m ImageGeneration.DDPM.main_forget --dataset cifar10 --data_path data --config cifar10_sfron.yml "
              "--ckpt_folder ckpt --label_to_forget {c} --mode sfron --method ron --unlearn_loss adaga "
              "--decay_forget_alpha --remain_alpha 1.0 --mask_path ckpt/mask_{c}/fisher_1.0.pt")
    expected = [line.format(c=c) for c in (3, 5) for line in
                (mask, common + " --forget_alpha 10.0", common + " --forget_alpha 1.0 --dual --forget_lr 1e-4")]
    assert recorded_commands(tmp_path, "ddpm_cifar10_sfron.sh", "ckpt", "data", "3", "5") == expected
    assert not (tmp_path / "runs").exists()


def test_without_launcher_the_dit_sweep_runs_mask_then_both_runs(tmp_path):
    commands = recorded_commands(tmp_path, "dit_sfron.sh", "imagenet", "7", "dit.pt")
    assert [line.split()[1] for line in commands] == ["ImageGeneration.DiT.generate_mask",
                                                      "ImageGeneration.DiT.main_forget",
                                                      "ImageGeneration.DiT.main_forget"]
    assert commands[0].endswith("--mask-path mask --n-iters 2000 --thresholds 0.5 1 3 5 10")
    assert commands[2].endswith("--n-iters 500 --lr 5e-5 --forget-alpha 1 --dual --forget_lr 5e-5")
    assert "--resume" not in " ".join(commands)


def job_lines(text: str):
    """The job list of a dry run's output: ``index<TAB>folder<TAB>call`` lines."""
    return [line for line in text.split("# jobs\n")[1].splitlines() if line.split("\t")[0].isdigit()]


def test_ddpm_sweep_dry_run_on_slurm_queues_the_masks_first(tmp_path):
    """LAUNCHER=slurm --dry_run: one job array of the masks, then one of the unlearning runs (with --resume,
    each marked finished by its `done` file)."""
    pytest.importorskip("submitit")
    runs = tmp_path / "runs"
    env = dict(os.environ, SAVE_DIR=str(runs), LAUNCHER="slurm", SWEEP_FLAGS="--dry_run --slurm_partition gpu",
               PATH=f"{FAKE_SLURM}{os.pathsep}{os.environ['PATH']}", FAKE_SLURM_DIR=str(tmp_path / "slurm_state"))
    result = subprocess.run(["bash", str(SCRIPTS / "ddpm_cifar10_sfron.sh"), "ckpt", "data", "3", "5"], env=env,
                            capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    scripts = result.stderr.split("#!/bin/bash")
    assert len(scripts) == 3 and "#SBATCH --array=0-1%2" in scripts[1] and "#SBATCH --array=0-3%4" in scripts[2]
    masks, unlearning = (job_lines(text) for text in scripts[1:])
    assert [line.split("\t")[1] for line in masks] == [f"{runs}/ddpm_cifar10_sfron/mask_{c}" for c in (3, 5)]
    assert all("ImageGeneration/DDPM/generate_mask.py" in line and "--resume" not in line for line in masks)
    assert [line.split("\t")[1] for line in unlearning] == [
        f"{runs}/ddpm_cifar10_sfron/{name}_{c}" for c in (3, 5) for name in ("sfron", "sfron_dual")]
    for line in unlearning:
        assert "ImageGeneration/DDPM/main_forget.py" in line and "--resume" in line
        assert f"('touch', '{line.split(chr(9))[1]}/done')" in line
    assert not (tmp_path / "slurm_state" / "submissions.jsonl").exists()


def test_digits_pipeline_refuses_a_launcher_in_one_line(tmp_path):
    result = subprocess.run(["bash", str(SCRIPTS / "ddpm_digits_pipeline.sh")], env=dict(os.environ, LAUNCHER="slurm"),
                            capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: LAUNCHER: ddpm_digits_pipeline.sh runs here only")
    assert not list(tmp_path.iterdir())
