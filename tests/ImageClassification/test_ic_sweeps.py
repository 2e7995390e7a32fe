"""The bash sweeps in scripts/ImageClassification: syntax, and one lr search end to end on digits."""
import json
import os
import subprocess
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts" / "ImageClassification"


@pytest.mark.parametrize("script", sorted(p.name for p in SCRIPTS.glob("*.sh")))
def test_script_syntax(script):
    assert subprocess.run(["bash", "-n", str(SCRIPTS / script)]).returncode == 0


def test_lr_search_on_digits_trains_runs_and_tabulates(tmp_path):
    env = dict(os.environ, SAVE_DIR=str(tmp_path), SEEDS="1", LRS="1e-4", EPOCHS="1", TRAIN_EPOCHS="2",
               DEVICE="cpu", OMP_NUM_THREADS="1", TQDM_DISABLE="1")
    result = subprocess.run(["bash", str(SCRIPTS / "lr_search.sh")], capture_output=True, text=True, env=env,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    for folder in ("original", "mask", "retrain_sgd_lr0.1/seed1", "salun_dual_lr1e-4/seed1"):
        assert (tmp_path / folder).is_dir(), folder
    record = json.loads((tmp_path / "salun_dual_lr1e-4" / "seed1" / "eval_result.json").read_text())
    assert record["method"] == "SalUn" and record["optim"] == "dual" and record["retain_lr"] == 0.01
    assert "| SalUn | dual | 0.0001 | 1 |" in result.stdout
    assert (tmp_path / "salun_dual_avg_gap.png").exists()
