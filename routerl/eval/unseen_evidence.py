"""What the unseen models' descriptors carry in an evaluation (``routerl eval --unseen-evidence``).

``probe`` (the protocol's default): per-domain sample scores *and* per-prompt probe results, both
from probe rows. ``sample-scores``: the per-domain sample scores only, the probe results dropped,
as for a model registered at run time from a provider's published scores without a probe run:
what routers make of the thinnest descriptor a new model can have.
"""

from __future__ import annotations

from typing import Iterable

from routerl.descriptors.model import ModelDescriptor

UNSEEN_EVIDENCE = ("probe", "sample-scores")


def with_unseen_evidence(descriptors: dict[str, ModelDescriptor], unseen: Iterable[str], evidence: str) -> dict[str, ModelDescriptor]:
    """A copy of ``descriptors`` whose unseen models carry ``evidence`` (one of ``UNSEEN_EVIDENCE``)."""
    if evidence not in UNSEEN_EVIDENCE:
        raise ValueError(f"unseen evidence {evidence!r}: expected one of {', '.join(UNSEEN_EVIDENCE)}")
    out = dict(descriptors)
    if evidence == "sample-scores":
        for model in set(unseen) & set(out):
            out[model] = out[model].with_changes(probe_results={})
    return out
