"""PrAC data selection: forgetting statistics (CET), prune disagreement (CEP), index files."""

from .disagreement import predictions
from .forgetting import ForgettingTracker
from .index_file import PracIndex, dataset_signature

__all__ = ["ForgettingTracker", "PracIndex", "dataset_signature", "predictions"]
