"""parse_result on hand-written logs and result files, against hand-computed averages."""
import json

import pytest

from ImageClassification import parse_result

LOG = """model retrain
alpha 0.1
retain acc: 100.0
forget acc: 10.0
test acc: 90.0
MIA: 0.7
retain acc: 100.0
forget acc: 12.0
test acc: 92.0
MIA: 0.5
model RL dual
alpha 0.001
Epoch #0, Learning rate: 0.001
retain acc: 98.0
forget acc: 8.0
test acc: 88.0
MIA: 0.4
retain acc: 96.0
forget acc: 4.0
test acc: 86.0
MIA: 0.6
"""


def test_log_groups_reference_and_average_gap(tmp_path, capsys):
    log = tmp_path / "dual.log"
    log.write_text(LOG)
    rows = parse_result.main(["--log_paths", str(tmp_path / "*.log"), "--format", "json"])
    out = json.loads(capsys.readouterr().out)
    # retrain means: UA 11, RA 100, TA 91, MIA 60;  RL means: UA 6, RA 97, TA 87, MIA 50
    assert out["reference"] == {"UA": 11.0, "RA": 100.0, "TA": 91.0, "MIA": 60.0}
    rl = next(r for r in rows if r["method"] == "RL dual")
    assert rl["seeds"] == 2 and rl["unlearn_lr"] == 0.001
    assert rl["UA"] == pytest.approx(6.0) and rl["UA_std"] == pytest.approx(2.0)
    assert rl["avg_gap"] == pytest.approx((5 + 3 + 4 + 10) / 4)
    assert rl["ToW"] == pytest.approx((5 + 3 + 4) / 3)
    assert rl["avg_std"] == pytest.approx((2 + 1 + 1 + 10) / 4)


def test_explicit_reference_markdown_csv_and_plot(tmp_path, capsys):
    log = tmp_path / "dual.log"
    log.write_text(LOG)
    parse_result.main(["--log_paths", str(log), "--ref", "6", "97", "87", "50", "--format", "markdown",
                       "--plot", str(tmp_path / "gap.png")])
    text = capsys.readouterr().out
    assert "| RL dual | - | 0.001 | 2 | 6.00+-2.00 | 97.00+-1.00 | 87.00+-1.00 | 50.00+-10.00 | 0.00 |" in text
    assert (tmp_path / "gap.png").stat().st_size > 1000
    parse_result.main(["--log_paths", str(log), "--ref", "6", "97", "87", "50", "--format", "csv"])
    header = capsys.readouterr().out.splitlines()[0]
    assert header.startswith("method,optim,unlearn_lr,seeds,UA,UA_std")


def test_result_files_group_by_method_optimizer_and_lr(tmp_path):
    def write(name, **values):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "eval_result.json").write_text(json.dumps(values))

    base = {"optim": "sgd", "unlearn_lr": 0.1, "RA": 100.0, "TA": 90.0}
    write("r1", method="retrain", unlearn="retrain", UA=10.0, MIA=50.0, **base)
    write("s1", method="SalUn", unlearn="RL", UA=6.0, MIA=40.0, **base)
    write("s2", method="SalUn", unlearn="RL", UA=8.0, MIA=44.0, **base)
    rows = parse_result.main(["--log_paths", str(tmp_path)])
    salun = next(r for r in rows if r["method"] == "SalUn")
    assert salun["seeds"] == 2 and salun["avg_gap"] == pytest.approx((3 + 0 + 0 + 8) / 4)


def test_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit):
        parse_result.main(["--log_paths", str(tmp_path / "none*.log")])
    assert "no file matches" in capsys.readouterr().err
    log = tmp_path / "rl.log"
    log.write_text(LOG.split("model RL dual")[1])
    with pytest.raises(SystemExit):
        parse_result.main(["--log_paths", str(log)])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no retrain runs" in err
