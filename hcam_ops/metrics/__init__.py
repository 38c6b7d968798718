"""Evaluation metrics (multi-label: threshold search and reports)."""

from .multilabel import (
    GRID,
    METRICS,
    binarize,
    format_table,
    multilabel_report,
    predict_tta,
    save_plots,
    search_thresholds,
)

__all__ = [
    "GRID",
    "METRICS",
    "binarize",
    "format_table",
    "multilabel_report",
    "predict_tta",
    "save_plots",
    "search_thresholds",
]
