"""Evaluation metrics (multi-label: threshold search, reports, the report's
pictures and training curves)."""

from .curves import read_log, save_history_curves
from .multilabel import (
    GRID,
    METRICS,
    TTA_VIEWS,
    binarize,
    format_table,
    multilabel_report,
    parse_views,
    predict_tta,
    save_plots,
    save_table,
    search_thresholds,
)

__all__ = [
    "GRID",
    "METRICS",
    "TTA_VIEWS",
    "binarize",
    "format_table",
    "multilabel_report",
    "parse_views",
    "predict_tta",
    "read_log",
    "save_history_curves",
    "save_plots",
    "save_table",
    "search_thresholds",
]
