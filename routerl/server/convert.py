"""Conversions between ``routerl.v1`` protobuf messages and routerl's Python types.

Used by the server and by ``routerl.client``, so both sides agree on one mapping:

* ``descriptor_to_proto`` / ``descriptor_from_proto``: ``ModelDescriptor`` <-> ``routerl.v1.ModelDescriptor``
  (validation errors are ``DescriptorError`` naming the field, e.g. ``model.input_price_per_mtok``);
* ``apply_update_mask``: the descriptor an ``UpdateModel`` call asks for;
* ``check_new_endpoint``: the endpoint check of a registration or an update (``Endpoint.check``);
* ``MODE_NAMES`` / ``ACTION_NAMES``: enum values <-> the names used in Python (``quality``, ``route``);
* ``FIELD_METADATA_KEY``: where an error names the request field at fault.
"""

from __future__ import annotations

from typing import Iterable

from routerl.descriptors.model import DescriptorError, Endpoint, ModelDescriptor
from routerl.server.proto import router_pb2 as pb

MODE_NAMES = {pb.MODE_QUALITY: "quality", pb.MODE_BALANCED: "balanced", pb.MODE_COST: "cost"}
MODE_VALUES = {name: value for value, name in MODE_NAMES.items()}
ACTION_NAMES = {pb.ACTION_ROUTE: "route", pb.ACTION_ACCEPT: "accept"}
ACTION_VALUES = {name: value for value, name in ACTION_NAMES.items()}

# Trailing metadata key under which the server names the request field of an INVALID_ARGUMENT.
FIELD_METADATA_KEY = "routerl-field"

# Top-level descriptor fields an update mask may name (every field except the id).
UPDATABLE_FIELDS = tuple(f for f in ModelDescriptor.__dataclass_fields__ if f != "id")


def descriptor_to_proto(desc: ModelDescriptor) -> pb.ModelDescriptor:
    msg = pb.ModelDescriptor(
        id=desc.id,
        input_price_per_mtok=desc.input_price_per_mtok,
        output_price_per_mtok=desc.output_price_per_mtok,
        latency_ms=desc.latency_ms,
        context_window=desc.context_window,
        sample_scores=desc.sample_scores,
        sample_counts=desc.sample_counts,
        probe_results=desc.probe_results,
        mean_output_tokens=desc.mean_output_tokens,
        description=desc.description,
        tags=list(desc.tags),
    )
    if desc.endpoint is not None:
        msg.endpoint.CopyFrom(
            pb.Endpoint(base_url=desc.endpoint.base_url, model_name=desc.endpoint.model_name, api_key_env=desc.endpoint.api_key_env)
        )
    return msg


def _fields_from_proto(msg: pb.ModelDescriptor) -> dict:
    return {
        "id": msg.id,
        "input_price_per_mtok": msg.input_price_per_mtok,
        "output_price_per_mtok": msg.output_price_per_mtok,
        "latency_ms": msg.latency_ms,
        "context_window": int(msg.context_window),
        "sample_scores": dict(msg.sample_scores),
        "sample_counts": {k: int(v) for k, v in msg.sample_counts.items()},
        "probe_results": dict(msg.probe_results),
        "mean_output_tokens": msg.mean_output_tokens,
        "description": msg.description,
        "tags": tuple(msg.tags),
        "endpoint": (
            Endpoint(msg.endpoint.base_url, msg.endpoint.model_name, msg.endpoint.api_key_env)
            if msg.HasField("endpoint")
            else None
        ),
    }


def _prefixed(exc: DescriptorError, prefix: str) -> DescriptorError:
    if not prefix:
        return exc
    return DescriptorError(f"{prefix}.{exc.field}", exc.message)


def descriptor_from_proto(msg: pb.ModelDescriptor, prefix: str = "") -> ModelDescriptor:
    """A validated descriptor; a ``DescriptorError`` names the field (under ``prefix``, e.g. ``model``)."""
    try:
        return ModelDescriptor(**_fields_from_proto(msg))
    except DescriptorError as exc:
        raise _prefixed(exc, prefix) from None


def apply_update_mask(current: ModelDescriptor, msg: pb.ModelDescriptor, paths: Iterable[str], prefix: str = "") -> ModelDescriptor:
    """``current`` with the fields named in ``paths`` taken from ``msg`` (all fields when empty).

    A path must be a top-level descriptor field other than ``id``; a map or list field is replaced
    whole. An unknown path is a ``DescriptorError`` on ``update_mask``.
    """
    paths = list(paths)
    if not paths:
        return descriptor_from_proto(msg, prefix)
    for path in paths:
        if path not in UPDATABLE_FIELDS:
            raise DescriptorError("update_mask", f"unknown or read-only path {path!r} (known: {', '.join(UPDATABLE_FIELDS)})")
    incoming = _fields_from_proto(msg)
    changes = {path: incoming[path] for path in paths}
    # sample_counts must keep matching sample_scores: drop counts of domains that lost their score.
    if "sample_scores" in changes and "sample_counts" not in changes:
        changes["sample_counts"] = {d: n for d, n in current.sample_counts.items() if d in changes["sample_scores"]}
    try:
        return current.with_changes(**changes)
    except DescriptorError as exc:
        raise _prefixed(exc, prefix) from None


def check_new_endpoint(desc: ModelDescriptor, previous: ModelDescriptor | None = None, prefix: str = "") -> None:
    """Raise a ``DescriptorError`` (under ``prefix``) when ``desc`` brings an endpoint no provider
    can be built from (``Endpoint.check``). An endpoint kept as it was in ``previous`` (the stored
    descriptor an update replaces) is not checked again: a model stored before the check existed
    can still be re-priced."""
    if desc.endpoint is None or (previous is not None and desc.endpoint == previous.endpoint):
        return
    try:
        desc.endpoint.check()
    except DescriptorError as exc:
        raise _prefixed(exc, prefix) from None
