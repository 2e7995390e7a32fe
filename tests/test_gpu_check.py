"""benchmarks/gpu_check.sh, the one-command GPU self-check, as a CPU smoke test: it must not rot."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def gpu_check(tmp_path, *args) -> tuple:
    result = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--device", "cpu",
                             "--out", str(tmp_path), *args], capture_output=True, text=True, timeout=900)
    return result, json.loads((tmp_path / "gpu_check.json").read_text())


def test_smoke_llm_diffusion_and_skips(tmp_path):
    """The LLM (bf16 autocast dual_adam), DDPM and DiT checks run; FlashAttention-2 and the 2-process launch
    are reported as SKIP with their reason on a CPU machine."""
    result, report = gpu_check(tmp_path, "--quick", "--only", "llm/dual_adam/,ddpm,dit,flash,accelerate")
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    status = {check["name"]: check["status"] for check in report["checks"]}
    assert status == {"llm/dual_adam/bfloat16": "PASS", "llm/flash_attention_2": "SKIP",
                      "ddpm/forget+sample": "PASS", "dit/forget+sample": "PASS", "accelerate/2-process": "SKIP"}
    lines = result.stdout.splitlines()
    assert any(line.startswith("PASS llm/dual_adam/bfloat16") and "tokens/s" in line for line in lines)
    assert any(line.startswith("SKIP accelerate/2-process") and "needs 2 or more GPUs" in line for line in lines)
    assert lines[-1].startswith("PASS: 3 passed, 2 skipped, 0 failed")
    llm = next(check for check in report["checks"] if check["name"] == "llm/dual_adam/bfloat16")
    assert llm["metrics"]["tokens_per_second"] > 0 and llm["peak_gpu_mb"] is None
    assert report["environment"]["device"] == "cpu"


def test_a_device_problem_is_one_line_naming_the_flag(tmp_path):
    result = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--device", "cuda:7",
                             "--out", str(tmp_path)], capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, CUDA_VISIBLE_DEVICES=""))
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "error: --device cuda:7: CUDA is not available on this machine; use --device cpu"]
    assert not (tmp_path / "gpu_check.json").exists()


@pytest.mark.slow
def test_every_family_on_cpu(tmp_path):
    """--quick: the first check of every family, image classification and determinism included."""
    result, report = gpu_check(tmp_path, "--quick")
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    assert {check["name"] for check in report["checks"] if check["status"] == "PASS"} >= {
        "ic/SalUn/sgd/amp-bfloat16-channels_last", "llm/dual_adam/bfloat16", "ddpm/forget+sample",
        "dit/forget+sample", "determinism/llm"}
