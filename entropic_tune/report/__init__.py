"""Analysis of experiment folders: tidy tables, statistics over seeds, figures, report.md/html.

Reads files only (the results contract of docs/ARCHITECTURE.md); never imports the trainer, torch or
Ray. Optuna is imported only by the search functions.

    exp = load_experiment("entropic_results/compare")
    summary_table(exp.summary); plot_entropy(exp, "entropy.png")
    write_report(["entropic_results/compare"], fmt="html")
"""

from __future__ import annotations

from .findings import findings
from .loading import (
    Experiment,
    completed,
    errored_trials,
    flatten_config,
    load_experiment,
    load_experiments,
)
from .names import METHOD_COLOURS, method_colour
from .paired import holm, paired_differences, paired_sentences, paired_t, seeds_needed, t_power
from .passk import crossing_sentences, pass_at_k_curves, pass_at_k_table, plot_pass_at_k
from .plots import (
    plot_control,
    plot_entropy,
    plot_reward_accuracy,
    save_figure,
)
from .plots_final import plot_ablation, plot_ablation_factor, plot_final_metrics
from .search import (
    best_trials,
    load_study,
    plot_kp_ki_map,
    plot_optimization_history,
    plot_param_importances,
    plot_pareto_front,
    search_objectives,
    search_trials,
)
from .stats import describe, method_stats, rank_methods, t_quantile
from .tables import ablation_table, experiment_setup, regime, summary_table
from .writer import PUBLISHED, write_report

__all__ = [
    "PUBLISHED",
    "crossing_sentences",
    "holm",
    "paired_differences",
    "paired_sentences",
    "paired_t",
    "pass_at_k_curves",
    "pass_at_k_table",
    "plot_pass_at_k",
    "seeds_needed",
    "t_power",
    "findings",
    "write_report",
    "METHOD_COLOURS",
    "Experiment",
    "ablation_table",
    "best_trials",
    "completed",
    "describe",
    "errored_trials",
    "experiment_setup",
    "flatten_config",
    "load_experiment",
    "load_experiments",
    "load_study",
    "method_colour",
    "method_stats",
    "plot_ablation",
    "plot_ablation_factor",
    "plot_control",
    "plot_entropy",
    "plot_final_metrics",
    "plot_kp_ki_map",
    "plot_optimization_history",
    "plot_param_importances",
    "plot_pareto_front",
    "plot_reward_accuracy",
    "rank_methods",
    "regime",
    "save_figure",
    "search_objectives",
    "search_trials",
    "summary_table",
    "t_quantile",
]
