"""Debugger rules over a job's metric series: the policies, and the statuses a finished job gets."""

from __future__ import annotations

from opensage.jobs import rules

XGB_DEFINITIONS = [
    {"Name": "train:rmse", "Regex": r".*\[[0-9]+\].*#011train-rmse:([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?).*"},
    {"Name": "validation:rmse", "Regex": r".*\[[0-9]+\].*#011validation-rmse:([-+]?[0-9]*\.?[0-9]+).*"},
    {"Name": "validation:auc", "Regex": r".*\[[0-9]+\].*#011validation-auc:([-+]?[0-9]*\.?[0-9]+).*"},
]


def _log(train: list[float], validation: list[float]) -> list[str]:
    return [
        f"[{i}]#011train-rmse:{t:.5f}#011validation-rmse:{v:.5f}#011validation-auc:0.9"
        for i, (t, v) in enumerate(zip(train, validation, strict=True))
    ]


def test_series_come_from_the_metric_definitions_and_losses_are_told_from_scores() -> None:
    series = rules.metric_series(_log([3, 2, 1], [3.5, 2.5, 2]) + ["no metric here"], XGB_DEFINITIONS)
    assert series == {"train:rmse": [3, 2, 1], "validation:rmse": [3.5, 2.5, 2], "validation:auc": [0.9] * 3}
    assert rules.losses(series) == ([3, 2, 1], [3.5, 2.5, 2])  # auc is a score, not a loss
    assert rules.losses({"validation:auc": [0.9]}) == (None, None)


def test_loss_not_decreasing() -> None:
    falling = [1.0 / (i + 1) for i in range(40)]
    assert rules.loss_not_decreasing(falling) is None
    flat_after_20 = falling[:20] + [falling[19]] * 20
    why = rules.loss_not_decreasing(flat_after_20, num_steps=10, diff_percent=0.1)
    assert why is not None and "step 30" in why
    assert rules.loss_not_decreasing(falling[:5]) is None  # fewer steps than one window: nothing to say


def test_overfit() -> None:
    train = [1.0, 0.8, 0.6, 0.4]
    assert rules.overfit(train, [1.05, 0.85, 0.65, 0.43]) is None
    why = rules.overfit(train, [1.05, 0.85, 0.7, 0.6], patience=1, ratio_threshold=0.1)
    assert why is not None and "step 2" in why
    assert rules.overfit(train, [1.05, 0.85, 0.7, 0.43], patience=2) is None  # one step over is within patience
    assert rules.overfit(train, [1.05, 0.85, 0.7, 0.6], start_step=3, patience=2) is None


def test_overtraining() -> None:
    improving = [1.0 - 0.05 * i for i in range(15)]
    assert rules.overtraining(improving, improving) is None
    stalled = improving[:5] + [improving[4]] * 6
    why = rules.overtraining(stalled, None, patience_train=5, delta=0.01)
    assert why is not None and why.startswith("The training loss stalled")
    why = rules.overtraining(improving, improving[:3] + [improving[2]] * 12, patience_validation=10)
    assert why is not None and why.startswith("The validation loss stalled")


def test_a_finished_jobs_rules_with_their_parameters() -> None:
    desc = {
        "DebugRuleConfigurations": [
            {"RuleConfigurationName": "LossNotDecreasing", "RuleParameters": {"rule_to_invoke": "LossNotDecreasing"}},
            {"RuleConfigurationName": "Overfit", "RuleParameters": {"rule_to_invoke": "Overfit"}},
            {
                "RuleConfigurationName": "LooseOverfit",
                "RuleParameters": {"rule_to_invoke": "Overfit", "ratio_threshold": "10"},
            },
            {"RuleConfigurationName": "ClassImbalance", "RuleParameters": {"rule_to_invoke": "ClassImbalance"}},
            {"RuleConfigurationName": "Bad", "RuleParameters": {"rule_to_invoke": "Overfit", "patience": "many"}},
        ],
        "ProfilerRuleConfigurations": [
            {"RuleConfigurationName": "ProfilerReport", "RuleParameters": {"rule_to_invoke": "ProfilerReport"}}
        ],
    }
    train = [1.0 / (i + 1) for i in range(30)]
    lines = _log(train, [t * 1.5 for t in train])
    out = rules.conclude(desc, lines, XGB_DEFINITIONS, "Completed", 100.0)
    got = {s["RuleConfigurationName"]: s for s in out["DebugRuleEvaluationStatuses"]}
    assert got["LossNotDecreasing"]["RuleEvaluationStatus"] == "NoIssuesFound"
    assert got["Overfit"]["RuleEvaluationStatus"] == "IssuesFound"
    assert "validation loss" in got["Overfit"]["StatusDetails"]
    assert got["LooseOverfit"]["RuleEvaluationStatus"] == "NoIssuesFound"
    assert got["ClassImbalance"]["RuleEvaluationStatus"] == "Error"
    assert "does not evaluate the ClassImbalance rule" in got["ClassImbalance"]["StatusDetails"]
    assert got["Bad"]["RuleEvaluationStatus"] == "Error" and "patience='many'" in got["Bad"]["StatusDetails"]
    (profiler,) = out["ProfilerRuleEvaluationStatuses"]
    assert profiler["RuleEvaluationStatus"] == "Error" and profiler["LastModifiedTime"] == 100.0
    assert any(line.startswith("Rule Overfit: IssuesFound (") for line in rules.log_lines(out))
    stopped = rules.conclude(desc, lines, XGB_DEFINITIONS, "Stopped", 100.0)
    assert {s["RuleEvaluationStatus"] for s in stopped["DebugRuleEvaluationStatuses"]} == {"Stopped"}
    no_metrics = rules.conclude(desc, ["nothing"], XGB_DEFINITIONS, "Failed", 100.0)
    assert no_metrics["DebugRuleEvaluationStatuses"][0]["RuleEvaluationStatus"] == "Error"
    assert rules.conclude({}, lines, XGB_DEFINITIONS, "Completed", 1.0) == {}


def test_rules_are_in_progress_while_the_job_runs() -> None:
    request = {"DebugRuleConfigurations": [{"RuleConfigurationName": "Overfit", "RuleEvaluatorImage": "x"}]}
    assert rules.initial_statuses(request, 5.0) == {
        "DebugRuleEvaluationStatuses": [
            {"RuleConfigurationName": "Overfit", "RuleEvaluationStatus": "InProgress", "LastModifiedTime": 5.0}
        ]
    }
