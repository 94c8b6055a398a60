"""Outcome data: recorded per-(prompt, model) results, the split protocol and a synthetic world."""

from routerl.data.outcomes import OutcomeDataError, OutcomeTable, load_outcomes
from routerl.data.splits import SPLIT_NAMES, Splits, bucket_of, split_of

__all__ = [
    "OutcomeDataError",
    "OutcomeTable",
    "load_outcomes",
    "SPLIT_NAMES",
    "Splits",
    "bucket_of",
    "split_of",
]
