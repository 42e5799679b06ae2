"""The pipeline's report as Markdown: the stages' own figures, PPO against DPO and GRPO, the
acceptance checks. Formatting only; nanollm/pipeline.py measures.

    lines = format_stage_metrics(checkpoint["metrics"])      # any nested dict of numbers
    lines = format_comparison(rows)                         # rows of pipeline.held_out_comparison
    lines = format_checks([("PPO's gain interval lies above 0", True, "0.01 to 0.05")])
"""

import numbers


def format_number(value):
    """Rates and rewards to three decimals, large figures (seconds, perplexity) whole."""
    if isinstance(value, bool) or isinstance(value, numbers.Integral):
        return str(int(value))
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3f}"


def _is_figure(value):
    """A number, or a tuple of numbers such as (accuracy, pairs)."""
    if isinstance(value, (tuple, list)):
        return bool(value) and all(isinstance(v, numbers.Number) for v in value)
    return isinstance(value, numbers.Number)


def _format_figure(value):
    if isinstance(value, (tuple, list)):
        return ", ".join(format_number(v) for v in value)
    return format_number(value)


def _words(key):
    return str(key).replace("_", " ")


def _figure_columns(metrics, path=()):
    """Every dict inside `metrics` that holds figures, as (path, {key: figure}) in order."""
    columns = []
    for key, value in metrics.items():
        if isinstance(value, dict):
            figures = {k: v for k, v in value.items() if _is_figure(v)}
            if figures:
                columns.append(((*path, key), figures))
            columns += _figure_columns(value, (*path, key))
    return columns


def _group_by_shared_keys(columns):
    """Columns that share a key become one table (say, taught and held-out answers, or training
    and held-out pairs by kind); the rest get a table each."""
    groups = []  # [(keys seen, [columns])]
    for path, figures in columns:
        group = next((g for g in groups if g[0] & figures.keys()), None)
        if group is None:
            groups.append((set(figures), [(path, figures)]))
        else:
            group[0].update(figures)
            group[1].append((path, figures))
    return [members for _, members in groups]


def format_stage_metrics(metrics):
    """A stage's "metrics" (a nested dict of numbers, whatever its shape) as Markdown: its own
    figures as a list, then each family of nested figures as one table, a column per dict."""
    lines = [f"- {_words(k)}: {_format_figure(v)}" for k, v in metrics.items() if _is_figure(v)]
    for members in _group_by_shared_keys(_figure_columns(metrics)):
        rows = list(dict.fromkeys(k for _, figures in members for k in figures))
        if all(list(figures) == sorted(figures) for _, figures in members):
            rows.sort()  # kinds of pair listed in order stay in order when merged
        names = [" / ".join(_words(p) for p in path) for path, _ in members]
        lines += [""] if lines else []
        lines += ["| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for row in rows:
            cells = [_format_figure(f[row]) if row in f else "" for _, f in members]
            lines.append(f"| {_words(row)} | " + " | ".join(cells) + " |")
    return lines


def _percent(value):
    return f"{value:.1%}"


def format_comparison(rows):
    """The aligned models against SFT on the same held-out questions: two Markdown tables. A row
    without a peak memory (a checkpoint that records none) shows a dash."""
    lines = ["| model | gold reward | accuracy | win rate vs SFT | KL to SFT (nats) | words "
             "| flattery | peak memory | wall time |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        wall = f"{r['seconds']:.0f} s" if r.get("seconds") else ""
        memory = f"{r['peak_memory_mb']:.0f} MiB" if r.get("peak_memory_mb") else "-"
        lines.append(f"| {name} | {r['gold_reward']:.3f} | {_percent(r['accuracy'])} | "
                     f"{_percent(r['win_rate'])} | {r['kl']:.2f} | {r['mean_words']:.1f} | "
                     f"{_percent(r['flattery_rate'])} | {memory} | {wall} |")
    lines += ["", "| model | gold-reward gain over SFT | 95% paired bootstrap interval "
              "| disliked styles (sampled) | accuracy (greedy) |", "|---|---|---|---|---|"]
    for name, r in rows.items():
        gain, interval = "", ""
        if "gain" in r:  # the aligned models; SFT is the baseline
            gain, interval = f"{r['gain'][0]:+.3f}", "{1:+.3f} to {2:+.3f}".format(*r["gain"])
        lines.append(f"| {name} | {gain} | {interval} | "
                     f"{_percent(r['sampled_disliked_rate'])} | {_percent(r['accuracy'])} |")
    return lines


def format_checks(checks):
    """[(statement, passed, evidence)] as a Markdown list, PASS or FAIL first."""
    return [f"- **{'PASS' if passed else 'FAIL'}** {statement} ({evidence})"
            for statement, passed, evidence in checks]
