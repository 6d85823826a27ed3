"""Benchmark evaluation: datasets as metadata, named protocols, trustworthy metrics, data-parallel and
resumable runs, and reports. See docs/evaluation.md."""
from .datasets import DatasetSpec, DenseDataset, list_datasets, list_templates, load_dataset_spec, read_templates
from .distributed import Dist, init_from_env
from .metrics import confusion_matrix, point_counts, pointwise_metrics, segmentation_metrics
from .pointwise import PointLabels, PointsDataset, score_points, scored_classes
from .protocols import PRESETS, Protocol, class_queries, describe, list_presets, resolve_protocol
from .report import compare_markdown, load_result, result_markdown, write_reports
from .runner import evaluate, open_dataset
from .sweep import parse_sweep, run_sweep

__all__ = [
    "evaluate",
    "open_dataset",
    "run_sweep",
    "parse_sweep",
    "DatasetSpec",
    "DenseDataset",
    "PointsDataset",
    "PointLabels",
    "list_datasets",
    "load_dataset_spec",
    "list_templates",
    "read_templates",
    "Protocol",
    "PRESETS",
    "list_presets",
    "resolve_protocol",
    "describe",
    "class_queries",
    "confusion_matrix",
    "segmentation_metrics",
    "point_counts",
    "pointwise_metrics",
    "score_points",
    "scored_classes",
    "Dist",
    "init_from_env",
    "result_markdown",
    "write_reports",
    "load_result",
    "compare_markdown",
]
