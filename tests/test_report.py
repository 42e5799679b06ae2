"""The report's Markdown: any nested dict of figures becomes readable lists and tables."""

from nanollm.report import format_checks, format_comparison, format_number, format_stage_metrics


def test_format_number():
    assert format_number(0.95312) == "0.953"
    assert format_number(1234.6) == "1235"
    assert format_number(200) == "200"
    assert format_number(-0.5) == "-0.500"


def test_stage_metrics_list_own_figures_and_table_nested_ones():
    metrics = {
        "val_accuracy": 0.9531, "note": "skipped: not a number",
        "train_by_kind": {"terse > wrong": 1.0, "hedge > wrong": 0.5},
        "held_out_by_kind": {"terse > wrong": 0.75, "padded > unsure": (0.25, 8)},
        "timing": {"seconds": 12.5},
    }
    lines = format_stage_metrics(metrics)
    assert lines[0] == "- val accuracy: 0.953"
    assert not any("note" in line for line in lines)
    # the two by-kind dicts share a kind, so they are one table with a column each
    assert "| | train by kind | held out by kind |" in lines
    assert "| terse > wrong | 1.000 | 0.750 |" in lines
    assert "| hedge > wrong | 0.500 |  |" in lines
    assert "| padded > unsure |  | 0.250, 8 |" in lines
    # timing shares no key with them: a table of its own
    assert "| | timing |" in lines and "| seconds | 12.500 |" in lines


def test_stage_metrics_nested_two_deep_become_columns_by_path():
    metrics = {"sft": {"taught": {"accuracy": 0.9}, "held_out": {"accuracy": 0.8}},
               "base": {"taught": {"accuracy": 0.1}}}
    lines = format_stage_metrics(metrics)
    assert "| | sft / taught | sft / held out | base / taught |" in lines
    assert "| accuracy | 0.900 | 0.800 | 0.100 |" in lines


def _row(**figures):
    base = dict(gold_reward=0.5, accuracy=0.9, win_rate=0.5, kl=0.0, mean_words=6.0,
                flattery_rate=0.1, sampled_disliked_rate=0.3, seconds=None)
    return {**base, **figures}


def test_comparison_tables_show_the_gain_interval_of_aligned_models_only():
    lines = format_comparison({"sft": _row(), "dpo": _row(gain=(0.05, 0.01, 0.09), seconds=60)})
    assert "| sft |  |  | 30.0% | 90.0% |" in lines
    assert "| dpo | +0.050 | +0.010 to +0.090 | 30.0% | 90.0% |" in lines
    assert any(line.startswith("| dpo | 0.500 |") and line.endswith("| 60 s |") for line in lines)


def test_checks_say_pass_or_fail():
    assert format_checks([("gain above 0", True, "0.1"), ("order", False, "a, b")]) == [
        "- **PASS** gain above 0 (0.1)", "- **FAIL** order (a, b)"]


def test_sorted_columns_merge_into_sorted_rows():
    lines = format_stage_metrics({"train": {"a > b": 1.0, "c > d": 0.5},
                                  "held_out": {"a > b": 0.5, "b > c": 0.0}})
    assert lines[0] == "| | train | held out |"  # no figures of its own: the table comes first
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| a > b", "| b > c", "| c > d"]
