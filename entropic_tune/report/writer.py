"""``write_report``: report.md (and a self-contained report.html) with tables, figures and findings."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path

from ..errors import UserError
from ..results.files import atomic_write_text
from .document import Block, to_html, to_markdown
from .findings import findings
from .loading import Experiment, load_experiment, load_experiments
from .names import FINAL, pass_at_k_columns
from .paired import (
    decision_metrics,
    paired_differences,
    paired_display,
    paired_sentences,
    primary_metric,
)
from .passk import crossing_sentences, pass_at_k_table, plot_pass_at_k
from .plots import (
    plot_control,
    plot_entropy,
    plot_reward_accuracy,
)
from .plots_final import plot_ablation, plot_ablation_factor, plot_final_metrics
from .published import PUBLISHED
from .search import (
    best_trials,
    plot_kp_ki_map,
    plot_optimization_history,
    plot_param_importances,
    plot_pareto_front,
    search_objectives,
    study_problem,
)
from .tables import ablation_table, experiment_setup, summary_table

FORMATS = ("html", "md")
DEFAULT_BASELINE = "grpo"

Figure = tuple[Path, str]


def _try(
    made: list[Figure],
    skipped: list[str],
    path: Path,
    caption: str,
    draw: Callable[[Path], object],
    errors: tuple[type[Exception], ...] = (ValueError,),
) -> None:
    try:
        draw(path)
    except errors as exc:
        skipped.append(f"{path.name} not drawn: {str(exc).splitlines()[0]}")
        return
    made.append((path, caption))


ENTROPY_CAPTION = (
    "Entropy per method vs rollout step; dashed: target entropy with its ±10% band; "
    "shaded: min-max over seeds."
)


def make_figures(exp: Experiment, folder: Path) -> tuple[list[Figure], list[str]]:
    """Draw every figure that applies to ``exp`` into ``folder``; returns (figures, skip notes)."""
    made: list[Figure] = []
    skipped: list[str] = []
    ablation = "factor" in exp.summary and exp.summary["factor"].notna().any()
    controlled = exp.summary["method"].isin(("entropic", "entropic_p")).any()
    plan = [
        # An ablation's curves are drawn per factor (plot_ablation_factor), not all levels at once.
        ("entropy.png", plot_entropy, not ablation, ENTROPY_CAPTION),
        ("control.png", plot_control, controlled and not ablation,
         "EntroPIC's PI controller: coefficient alpha, error H - H_target and its integral per step."),
        ("reward_accuracy.png", plot_reward_accuracy, not ablation,
         "Training reward and held-out accuracy per method vs rollout step."),
        # Pooling an ablation's variants per method would hide the factor: plot_ablation instead.
        ("final_metrics.png", plot_final_metrics, not ablation,
         "Final accuracy and entropy tracking RMSE per method: mean and 95% t-interval over seeds; "
         "hollow dots are single seeds."),
        ("pass_at_k.png", plot_pass_at_k, not ablation and bool(pass_at_k_columns(exp.summary.columns)),
         "pass@k of the large final evaluation per method (mean, 95% t band over seeds) with the base "
         "model's curve (dashed), and each method minus the base, paired per trial."),
        ("ablation.png", plot_ablation, ablation,
         "Ablations: one row per factor, final accuracy and tracking RMSE per variant "
         "(mean and 95% t-interval)."),
    ]  # fmt: skip
    for name, plot, wanted, caption in plan:
        if wanted:
            _try(made, skipped, folder / name, caption, partial(plot, exp))
    for factor in _factors(exp) if ablation else []:
        _try(made, skipped, folder / _factor_figure(factor),
             f"Ablation of {factor}: entropy and alpha per level vs step, final accuracy and tracking "
             "RMSE per level (mean, 95% t-interval, seeds as dots).",
             partial(plot_ablation_factor, exp, factor))
    for path in exp.paths:
        name = _name_of(exp, path)
        if (exp.metas.get(name) or {}).get("kind") == "search":
            prefix = _slug(name) + "-" if len(exp.paths) > 1 else ""
            _search_figures(load_experiment(path, name), folder, prefix, made, skipped)
    return made, skipped


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _factors(exp: Experiment) -> list[str]:
    return list(dict.fromkeys(exp.summary["factor"].dropna())) if "factor" in exp.summary else []


def _factor_figure(factor: str) -> str:
    return f"ablation_{_slug(factor)}.png"


def _name_of(exp: Experiment, path: Path) -> str:
    return list(exp.metas)[exp.paths.index(path)]


def _search_figures(
    exp: Experiment, folder: Path, prefix: str, made: list[Figure], skipped: list[str]
) -> None:
    problem = study_problem(exp)
    if problem:
        skipped.append(f"search figures not drawn: {problem}")
        return
    metric, mode = search_objectives(exp)[0]
    plan = [
        ("search_history.png", plot_optimization_history,
         f"Optuna optimisation history of {metric} ({mode}imise)."),
        ("search_importances.png", plot_param_importances, f"Parameter importances for {metric}."),
        ("kp_ki_map.png", plot_kp_ki_map,
         f"Kp x Ki map: each completed trial coloured by {metric}; the star marks the best."),
    ]  # fmt: skip
    if len(search_objectives(exp)) > 1:
        plan.append(
            ("pareto_front.png", plot_pareto_front, "Pareto front of the two search objectives.")
        )
    for name, plot, caption in plan:
        # Optuna raises RuntimeError/ValueError when a study is too small for a plot.
        _try(made, skipped, folder / f"{prefix}{name}", caption, partial(plot, exp),
             (ValueError, RuntimeError))  # fmt: skip


def _pass_at_k_blocks(exp: Experiment) -> list[Block]:
    table = pass_at_k_table(exp.summary)
    if table.empty:
        return []
    n = max(pass_at_k_columns(exp.summary.columns, FINAL))
    return [
        ("h3", "pass@k of the large final evaluation"),
        ("table", table),
        ("p", f"Unbiased pass@k (Chen et al. 2021) from {n} samples per held-out problem, averaged over "
              "problems; cells: mean [95% t-interval] over completed seeds. 'base' is the same "
              "evaluation of the base model before step 1 (the same random numbers in every trial)."),
    ]


def _paired_blocks(exp: Experiment, baseline: str) -> list[Block]:
    methods = set(exp.completed["method"])
    if baseline not in methods:
        return [("h3", "Paired differences"),
                ("p", f"No paired differences: the baseline method '{baseline}' has no completed trial "
                      f"here (methods: {', '.join(sorted(methods))}); choose one with --baseline.")]
    if len(methods) < 2:
        return []
    primary = primary_metric(exp.summary, exp.meta.get("primary"))
    table = paired_differences(exp.summary, baseline, primary=primary)
    others = [m for m in decision_metrics(exp.completed) if m != primary]
    return [
        ("h3", f"Paired differences against {baseline}"),
        ("table", paired_display(table)),
        ("p", f"Each method minus {baseline} on the same seeds (paired). Primary metric (declared "
              f"by the experiment's space, else final pass@1): {primary}; secondary: "
              f"{', '.join(others) or 'none'}. 95% t-interval over the paired seeds. Holm's "
              "correction across the methods on the primary metric, and separately across every "
              "method on every secondary metric as one family (resolved: Holm-adjusted p < 0.05 "
              "within its family); the corrected interval is Bonferroni's over the same family "
              "(conservative). 'accuracy' of final/ and base/ is greedy decoding. Seeds for 80% "
              "power: how many paired seeds a t test at the corrected level would need if the "
              "true difference were the observed one (exact noncentral t; a planning figure)."),
        ("list", paired_sentences(table)),
    ]


def _results_blocks(exp: Experiment, figures: list[Figure], baseline: str) -> list[Block]:
    """Result tables; for an ablation one table per factor, each followed by its figure (taken out
    of ``figures``)."""
    if exp.kind == "ablate" and _factors(exp):
        blocks: list[Block] = [("h2", "Results per ablation variant")]
        table = ablation_table(exp.summary)
        for factor in _factors(exp):
            blocks += [("h3", f"Factor: {factor}"),
                       ("table", table[table["factor"] == factor].drop(columns="factor"))]
            for fig in [f for f in figures if f[0].name == _factor_figure(factor)]:
                figures.remove(fig)
                blocks.append(("figure", *fig))
    else:
        blocks = [("h2", "Results per method"), ("table", summary_table(exp.summary))]
    blocks.append(
        (
            "p",
            "Cells: mean ± sample std [95% t-interval] over completed seeds; rank by final "
            "pass@1 of the large evaluation when there is one, else by final accuracy (ties broken "
            "by lower tracking RMSE). Tracking RMSE is relative to the "
            "target (0.1 = 10%); entropy drop is 1 - H_last/H_first.",
        )
    )
    if not (exp.kind == "ablate" and _factors(exp)):
        blocks += _pass_at_k_blocks(exp) + _paired_blocks(exp, baseline)
    for path in exp.paths:
        sub = load_experiment(path, _name_of(exp, path))
        if sub.kind == "search" and not study_problem(sub):
            blocks += [
                ("h3", f"Search {sub.name}: best completed trials"),
                ("table", best_trials(sub)),
            ]
    return blocks


def shown_path(path: str | Path, base: Path | None) -> str:
    """``path`` as a report names it: relative to the report's folder ``base`` (a report travels with
    its folder; the machine's absolute paths mean nothing elsewhere), ``NAME (this folder)`` for it."""
    if base is None:
        return Path(path).name
    rel = os.path.relpath(Path(path).resolve(), Path(base).resolve())
    return f"{Path(path).resolve().name} (this folder)" if rel == "." else Path(rel).as_posix()


def report_blocks(exp: Experiment, figures: list[Figure], skipped: list[str],
                  baseline: str = DEFAULT_BASELINE, base: Path | None = None) -> list[Block]:
    """The whole report as document blocks; folders are named relative to ``base`` (the report's
    folder: :func:`shown_path`)."""
    folders = ", ".join(shown_path(p, base) for p in exp.paths)
    for path in sorted(exp.paths, key=lambda p: -len(str(p))):  # messages that name a folder: the same
        skipped = [line.replace(str(path), shown_path(path, base)) for line in skipped]
    setup = experiment_setup(exp).reset_index(names="item")
    blocks: list[Block] = [
        ("h1", f"Experiment report: {exp.name}"),
        (
            "p",
            f"Generated by entropic_tune.report from {folders}. Only trials with status TERMINATED "
            "enter the statistics; intervals are two-sided 95% Student-t intervals over seeds.",
        ),
        ("h2", "Setup"),
        ("table", setup),
    ]
    if not exp.errored.empty:
        blocks += [("h2", "Trials that did not complete (excluded)"), ("table", exp.errored)]
    figures = list(figures)
    blocks += _results_blocks(exp, figures, baseline)
    found = findings(exp) + ([] if exp.kind == "ablate" else crossing_sentences(exp.summary))
    blocks += [("h2", "Findings (computed from the numbers above)"), ("list", found)]
    blocks.append(("h2", "Figures"))
    blocks += [("figure", path, caption) for path, caption in figures]
    if skipped:
        blocks.append(("list", skipped))
    blocks += [
        ("h2", "Published reference numbers (NOT from this experiment)"),
        (
            "p",
            "Copied from the papers (METHOD.md section 3.3) for orientation only: other models, tasks "
            "and budgets, so they are not comparable with the numbers above.",
        ),
        ("table", PUBLISHED),
    ]
    return blocks


def write_report(
    dirs: str | Path | Iterable[str | Path], fmt: str = "md", out: Path | None = None,
    baseline: str | None = None,
) -> Path:
    """Write ``report.md`` (and ``report.html`` for ``fmt="html"``) plus ``figures/*.png``.

    Output goes to ``out`` or the first experiment folder; paired differences are taken against
    ``baseline``, by default the one recorded in the first experiment.yaml (``compare --baseline``),
    else grpo. Returns the report written last (report.html for html). Raises ``ValueError`` for
    an unknown format or a folder without summary.csv/history.csv.
    """
    if fmt not in FORMATS:
        raise UserError(f"unknown report format '{fmt}'; allowed: {', '.join(FORMATS)}")
    exp = load_experiments(dirs)
    folder = Path(out) if out is not None else exp.path
    folder.mkdir(parents=True, exist_ok=True)
    figures, skipped = make_figures(exp, folder / "figures")
    baseline = baseline or str(exp.meta.get("baseline") or DEFAULT_BASELINE)
    blocks = report_blocks(exp, figures, skipped, baseline, folder)
    md = folder / "report.md"
    atomic_write_text(md, to_markdown(blocks, folder))
    if fmt == "md":
        return md
    page = folder / "report.html"
    atomic_write_text(page, to_html(blocks, f"Experiment report: {exp.name}"))
    return page
