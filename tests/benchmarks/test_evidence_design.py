"""The evidence engine's design: grids, best setting, robustness width, edge extension, gaps over seeds."""
import math

import pytest

from benchmarks.evidence.design import (DIVERGED_GAP, TIED, GridPoint, MethodGrid, best_setting, curve_at,
                                        response_range,
                                        decade_grid, edge_extension, gap_text, insensitive, log_grid, report_curve,
                                        rises_at_both_ends, robustness_width, search, seed_gaps, seed_summary,
                                        trajectory_summary)
from benchmarks.evidence.report import plot_curves, reading, render_tables


def curve(gaps, lrs=(1e-4, 1e-3, 1e-2, 1e-1, 1.0), retain_lr=0.01):
    return [GridPoint(lr, retain_lr, gap) for lr, gap in zip(lrs, gaps)]


def test_log_grid_is_log_spaced_and_rounded():
    assert log_grid(1e-3, 1e-1, 5) == [0.001, 0.00316, 0.01, 0.0316, 0.1]
    assert log_grid(1e-4, 1e-1, 4) == [1e-4, 1e-3, 1e-2, 1e-1]
    for bad in ((1e-1, 1e-3, 5), (0.0, 1.0, 3), (1e-3, 1e-1, 1)):
        with pytest.raises(ValueError):
            log_grid(*bad)


def test_decade_grid_has_the_same_resolution_over_any_range():
    assert decade_grid(1e-3, 1e-1) == (0.001, 0.00215, 0.00464, 0.01, 0.0215, 0.0464, 0.1)
    assert len(decade_grid(1e-5, 1e-2)) == 10 and len(decade_grid(1e-6, 1e-4)) == 7
    assert decade_grid(1e-4, 1e-2, per_decade=2) == (0.0001, 0.000316, 0.001, 0.00316, 0.01)


def test_robustness_width_interpolates_where_the_curve_crosses_best_plus_tolerance():
    # best 3.0 at 1e-2, threshold 5.0: it crosses 2/7 of the way to 1e-3 (gap 10) and, past 1e-1 (4.5),
    # 1/9 of the way to 1 (gap 9); the 4.0 at 1e-4 is cut off by the 10 between
    decades, low, high = robustness_width(curve([4.0, 10.0, 3.0, 4.5, 9.0]))
    assert decades == pytest.approx(1 + 2 / 7 + 1 / 9)
    assert (math.log10(low), math.log10(high)) == pytest.approx((-2 - 2 / 7, -1 + 1 / 9))
    assert robustness_width(curve([4.0, 10.0, 3.0, 4.5, 9.0]), tolerance=0.5)[0] == pytest.approx(0.5 / 7 + 1 / 3)
    # within tolerance down to the grid's low end: the range stops there
    assert robustness_width(curve([1.0, 1.5, 2.0, 2.9, 3.1]))[0] == pytest.approx(3.5)
    # a finer grid of the same V-shaped curve measures the same width
    v = lambda lr: 4 * abs(math.log10(lr) + 2)  # noqa: E731
    coarse = [GridPoint(lr, 0.01, v(lr)) for lr in log_grid(1e-4, 1, 5)]
    fine = [GridPoint(lr, 0.01, v(lr)) for lr in log_grid(1e-4, 1, 9)]
    assert robustness_width(coarse)[0] == pytest.approx(robustness_width(fine)[0]) == pytest.approx(1.0)


def test_best_setting_breaks_ties_in_grid_order():
    points = [GridPoint(1e-2, 0.01, 2.0), GridPoint(1e-3, 0.003, 2.0), GridPoint(1e-3, 0.01, 5.0)]
    assert best_setting(points) == GridPoint(1e-3, 0.003, 2.0)
    with pytest.raises(ValueError):
        best_setting([])


def test_edge_extension_goes_one_step_past_an_edge_where_the_curve_has_not_risen():
    assert edge_extension(curve([1.0, 2.0, 3.0, 4.0, 5.0]), 1.0) == pytest.approx(1e-5)  # best on the low edge
    assert edge_extension(curve([5.0, 4.0, 3.0, 2.0, 1.0]), 0.5) == pytest.approx(3.16)
    assert edge_extension(curve([5.0, 1.0, 3.0, 4.0, 5.0]), 1.0) is None  # both ends more than 2 above the best
    # best inside, but the low end is within 2 points of it: the robust range may go on below the grid
    assert edge_extension(curve([2.5, 1.0, 3.0, 4.0, 5.0]), 1.0) == pytest.approx(1e-5)
    assert edge_extension(curve([2.5, 1.0, 3.0, 4.0, 2.0]), 1.0) == pytest.approx(10.0)  # the lower-gap edge first
    # on the grid's own log spacing: past log_grid(1e-5, 1e-3, 5)'s top comes 1e-2 exactly (3.16e-3 x 3.16 is not)
    grid = [GridPoint(lr, 0.01, gap) for lr, gap in zip(log_grid(1e-5, 1e-3, 5) + [3.16e-3], [9, 8, 7, 6, 5, 4])]
    assert edge_extension(grid, 0.5, anchor=1e-5) == 0.01
    assert rises_at_both_ends(curve([5.0, 1.0, 3.0, 4.0, 5.0]))
    assert not rises_at_both_ends(curve([1.0, 2.0, 3.0, 4.0, 5.0]))
    assert not rises_at_both_ends(curve([2.5, 1.0, 3.0, 4.0, 5.0])) and rises_at_both_ends(curve([2.5, 1.0, 9.0]), 1.0)


def test_report_curve_takes_the_forget_lr_curve_at_the_best_retain_lr():
    points = curve([6.0, 4.0, 5.0, 7.0, 9.0], retain_lr=0.003) + curve([5.0, 3.0, 2.5, 8.0, 9.0], retain_lr=0.01)
    report = report_curve("SalUn", "dual", points)
    assert (report.best_forget_lr, report.best_retain_lr, report.search_gap) == (1e-2, 0.01, 2.5)
    assert report.curve == [(p.forget_lr, p.gap) for p in curve_at(points, 0.01)]
    # 3.0 at 1e-3 is within 2.5 + 2; towards 1e-4 (5.0) it crosses 4.5 3/4 of the way; towards 1e-1 (8.0) 2/5.5
    assert report.robustness_decades == pytest.approx(1 + 0.75 + 2 / 5.5)
    assert report.searched_both_ends


def test_seed_summary_uses_population_std():
    summary = seed_summary([{"UA": 1.0, "RA": 10.0}, {"UA": 3.0, "RA": 10.0}], ("UA", "RA"))
    assert summary == {"UA": 2.0, "UA_std": 1.0, "RA": 10.0, "RA_std": 0.0, "avg_std": 0.5}


def test_plot_curves_writes_an_image(tmp_path):
    points = curve([6.0, 4.0, 5.0, 7.0, 9.0])
    records = [{**report_curve(method, optim, points).as_dict(), "tied_lrs": False}
               for method, optim in (("SalUn", "sgd"), ("SalUn", "dual"), ("SCRUB", "sgd"))]
    plot_curves(records, tmp_path / "curves.png", "gap", "title", original_gap=5.0)
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_curves_marks_diverged_runs_and_a_diverged_default_at_the_top_of_their_panel(tmp_path, monkeypatch):
    from benchmarks.evidence import report as reporting
    figures = []
    monkeypatch.setattr(reporting, "_save", lambda figure, path: figures.append(figure))
    points = curve([6.0, 4.0, 5.0, math.inf, math.inf])  # the two largest lrs diverged
    record = {**report_curve("SCRUB", "dual_prodigy", points).as_dict(), "tied_lrs": False, "default_lr": 1.0,
              "no_search": {"avg_gap": math.inf}}
    plot_curves([record], tmp_path / "curves.png", "gap", "title", original_gap=5.0)
    lines = {line.get_label(): line for line in figures[0].axes[0].get_lines()}
    diverged = lines["dual_prodigy diverged"]
    assert list(diverged.get_xdata()) == [1e-1, 1.0]  # lr / default lr 1.0
    assert list(diverged.get_ydata()) == [0.97, 0.97] and diverged.get_marker() == "x"  # axes fraction: the top
    default = lines["dual_prodigy default diverged"]
    assert list(default.get_xdata()) == [1.0] and default.get_fillstyle() == "none"


def test_search_runs_the_grid_as_one_batch_then_extends_past_the_edge_holding_the_best():
    def gap(lr, retain_lr):  # a valley at lr 1e-5, below the grid; the retain lr 0.01 is better everywhere
        return 3 * abs(math.log10(lr) + 5) + (0.0 if retain_lr == 0.01 else 1.0)

    batches = []

    def gaps_at(settings):
        batches.append(list(settings))
        return [gap(*setting) for setting in settings]

    grid = MethodGrid("SalUn", "dual", (1e-4, 1e-3, 1e-2), (0.003, 0.01))
    points = search(grid, gaps_at, max_extensions=2, log=lambda text: None)
    assert len(batches[0]) == 6 and batches[1:] == [[(1e-5, 0.01)], [(1e-6, 0.01)]]
    assert best_setting(points) == GridPoint(1e-5, 0.01, 0.0) and rises_at_both_ends(curve_at(points, 0.01))
    tied = search(MethodGrid("SFRon", "sgd", (1e-5, 1e-4, 1e-3), None), gaps_at, max_extensions=2,
                  log=lambda text: None)
    # the valley is on the tied grid's low edge: one extension below it, then the best is inside
    assert {p.retain_lr for p in tied} == {TIED} and [p.forget_lr for p in tied] == [1e-5, 1e-4, 1e-3, 1e-6]


def diverging_main(argv):
    """An entry script whose loop meets a NaN retain loss at step 3 (the decorated ``main`` of every script)."""
    from common.errors import cli_main
    from common.nonfinite import check_finite_loss

    @cli_main
    def main(argv):
        print("training", argv)
        check_finite_loss(float("nan"), 3, "retain", 1e-4)

    main(argv)


def failing_main(argv):
    from common.errors import UsageError, cli_main
    cli_main(lambda argv: (_ for _ in ()).throw(UsageError("--data: not found")))(argv)


def test_a_run_stopped_by_a_non_finite_loss_is_a_diverged_record_not_a_crash(tmp_path, monkeypatch):
    import sys
    import types

    from common.evidence_runs import DIVERGED_FILE, Call, Runner, RunsFailed
    module = types.ModuleType("fake_entry_scripts")
    module.diverging, module.failing = diverging_main, failing_main
    monkeypatch.setitem(sys.modules, "fake_entry_scripts", module)
    runner = Runner(tmp_path)
    diverging = Call("fake_entry_scripts:diverging", ("--lr", "1"), tmp_path / "a", "run.json")
    records = runner.records([diverging], lambda call: {"UA": 1.0}, ("UA", "RA"))
    assert diverging.done and (tmp_path / "a" / DIVERGED_FILE).is_file()
    assert math.isnan(records[0]["UA"]) and math.isnan(records[0]["RA"])
    assert records[0]["diverged"].startswith("the retain loss is nan at step 3 (lr 0.0001)")
    assert "error: the retain loss is nan" in (tmp_path / "a" / "log.txt").read_text()
    # it counts as finished: a resumed benchmark does not run it again
    runner.run([diverging])
    assert (tmp_path / "a" / "log.txt").read_text().count("training") == 1
    # any other failure still ends the benchmark (after the other runs of its batch), naming the run's log,
    # and leaves no record
    with pytest.raises(RunsFailed, match=f"1 of 1 runs failed:\n- {tmp_path / 'b'} \\(log: {tmp_path / 'b'}/log.txt"):
        runner.run([Call("fake_entry_scripts:failing", (), tmp_path / "b")])
    assert not (tmp_path / "b" / DIVERGED_FILE).exists()


def test_a_diverged_run_is_never_best_ends_robust_ranges_and_prints_as_diverged():
    # diverges at lr >= 1e-3: the curve has risen at its high edge, and the robust range stops before it
    gaps = {1e-5: 3.0, 1e-4: 1.0, 1e-3: DIVERGED_GAP}
    points = search(MethodGrid("SFRon", "dual_aa_v", tuple(gaps), None), lambda s: [gaps[lr] for lr, _ in s], 0,
                    log=lambda text: None)
    report = report_curve("SFRon", "dual_aa_v", points)
    assert report.best_forget_lr == 1e-4 and report.robust_range[1] == pytest.approx(1e-4)
    assert not report.searched_both_ends  # the low edge is within 2 points of the best
    assert not insensitive(report.curve, spread=100.0)  # a diverged point is an effect of the lr
    # every run diverges: no robust range, and the search goes one step below the grid
    seen = []
    everywhere = search(MethodGrid("SFRon", "dual_aa_v", (1e-4, 1e-3), None),
                        lambda s: seen.extend(s) or [DIVERGED_GAP] * len(s), 1, log=lambda text: None)
    assert [p.forget_lr for p in everywhere] == [1e-4, 1e-3, 1e-5]
    assert report_curve("SFRon", "dual_aa_v", everywhere).robustness_decades == 0.0
    # a setting that diverges on one seed has a diverged average gap
    runs = [{"UA": 1.0}, {"UA": math.nan, "diverged": "the retain loss is nan"}]
    assert seed_gaps(runs, ("UA",), lambda r: r["UA"])["avg_gap"] == DIVERGED_GAP
    assert gap_text(DIVERGED_GAP) == "diverged"
    record = {"method": "SFRon", "optim": "dual_aa_v", "best_forget_lr": 1e-4, "best_retain_lr": TIED,
              "tied_lrs": True, "seed_mean": {"UA": math.nan, "UA_std": math.nan}, "per_seed": {"1": {}, "2": {}},
              "avg_gap": DIVERGED_GAP, "mean_seed_gap": DIVERGED_GAP, "gap_std": math.nan, "avg_std": math.nan,
              "robustness_decades": 0.0, "insensitive": False, "grid_size": 2, "searched_both_ends": False,
              "curve": [(1e-4, DIVERGED_GAP)]}
    table = render_tables([record], ("UA",))
    assert "| diverged | diverged |" in table and "0.0001: diverged" in table
    finite = {**record, "optim": "sgd", "avg_gap": 4.0, "mean_seed_gap": 4.5, "gap_std": 1.0, "curve": [(1e-4, 4.0)]}
    text = reading([record, finite], original_gap=10.0, reference="Retrain")
    assert "Avg Gap sgd 4.00" in text and "on some seed: dual_aa_v." in text


def test_avg_gap_is_the_gap_of_the_seed_means_and_the_mean_per_seed_gap_is_kept_apart():
    # UA 2 and 6 around a reference of 4: each seed is 2 off, their mean is on it
    runs = [{"UA": 2.0, "RA": 1.0}, {"UA": 6.0, "RA": 1.0}]
    gaps = seed_gaps(runs, ("UA", "RA"), lambda m: (abs(m["UA"] - 4.0) + abs(m["RA"] - 0.0)) / 2)
    assert gaps == {"avg_gap": pytest.approx(0.5), "mean_seed_gap": pytest.approx(1.5), "gap_std": pytest.approx(0.0)}


def test_a_curve_flat_within_its_seed_spread_is_insensitive():
    assert insensitive([(1e-4, 9.0), (1e-3, 9.4), (1e-2, 8.8)], spread=0.7)
    assert not insensitive([(1e-4, 9.0), (1e-3, 9.4), (1e-2, 8.8)], spread=0.5)
    assert not insensitive([(1e-4, 9.0)], spread=5.0) and not insensitive([(1e-4, 9.0), (1e-3, 9.0)], math.nan)
    assert insensitive([(1e-4, 9.0), (1e-3, 9.0)], spread=0.0)  # no change at all, even on one seed
    base = {"method": "SCRUB", "best_retain_lr": 0.01, "tied_lrs": False, "searched_both_ends": True,
            "robustness_decades": 2.0, "gap_std": 1.0}
    text = reading([{**base, "optim": "sgd", "avg_gap": 3.0, "insensitive": True},
                    {**base, "optim": "dual", "avg_gap": 3.5, "insensitive": False, "robustness_decades": 0.5}],
                   original_gap=10.0, reference="Retrain")
    assert "sgd 3.00 (per-seed gap std 1.00, insensitive: the forget lr has no effect here)" in text
    assert "least lr-sensitive" not in text  # the flat curve is not robustness


def test_trajectory_summary_is_mean_and_std_over_seeds_at_each_point():
    seed1 = [{"progress": 0, "UA": 0.0}, {"progress": 1, "UA": 4.0}, {"progress": 2, "UA": 8.0}]
    seed2 = [{"progress": 0, "UA": 2.0}, {"progress": 1, "UA": 8.0}, {"progress": 2, "UA": 8.0}]
    summary = trajectory_summary([seed1, seed2], ("UA",))
    assert [(p["progress"], p["UA"], p["UA_std"]) for p in summary["points"]] == [(0, 1.0, 1.0), (1, 6.0, 2.0),
                                                                                 (2, 8.0, 0.0)]
    # the mean std leaves out the start (the original on each seed's split)
    assert summary["end_std"] == {"UA": 0.0} and summary["mean_std"] == {"UA": 1.0} and summary["seeds"] == 2
    with pytest.raises(ValueError, match="differ in length"):
        trajectory_summary([seed1, seed2[:2]], ("UA",))


def test_reading_never_calls_a_method_no_better_than_doing_nothing_the_least_lr_sensitive():
    def record(optim, avg_gap, decades):
        return {"method": "SFRon", "optim": optim, "avg_gap": avg_gap, "gap_std": 1.0, "robustness_decades": decades,
                "insensitive": False, "searched_both_ends": True, "best_retain_lr": TIED, "tied_lrs": True}
    text = reading([record("dual", 3.0, 0.3), record("sgd", 9.0, 0.2), record("dual_aa_v", 50.0, 1.0)],
                   original_gap=25.0, reference="Retrain")
    assert "dual is the least lr-sensitive" in text and "No better than doing nothing: dual_aa_v" in text


def test_response_range_is_the_gap_span_over_finished_points():
    assert response_range([(1e-4, 3.0), (1e-3, 1.5), (1e-2, 9.25), (1e-1, DIVERGED_GAP)]) == 7.75
    assert math.isnan(response_range([(1e-4, DIVERGED_GAP)]))
