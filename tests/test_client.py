"""``RouterClient`` argument checks that need no server: a bad argument is a ``ValueError`` that
names it, raised before any call, never a silent change of meaning or a bare protobuf message."""

from __future__ import annotations

import math

import pytest

from routerl.client import RouterClient, build_complete_request, build_route_request
from routerl.descriptors import ModelDescriptor

NOWHERE = "127.0.0.1:1"  # no server: a call that got as far as gRPC would fail UNAVAILABLE


@pytest.mark.parametrize("timeout", [math.inf, -math.inf, 1e12, True, 0, -1.0, math.nan])
def test_client_timeouts_grpc_cannot_honour_are_refused(timeout):
    """An infinite or huge deadline overflows gRPC's (every call then fails DEADLINE_EXCEEDED at once)."""
    with pytest.raises(ValueError, match="timeout"):
        RouterClient(NOWHERE, timeout=timeout)


@pytest.mark.parametrize("timeout", [math.nan, math.inf, -1.0, 0])
def test_per_call_timeouts_are_checked_before_the_call(timeout):
    with RouterClient(NOWHERE, timeout=1.0) as client:
        for call in (lambda: client.route("q", timeout=timeout), lambda: client.complete("q", timeout=timeout),
                     lambda: list(client.complete_stream("q", timeout=timeout))):
            with pytest.raises(ValueError, match="timeout"):
                call()


def test_a_single_model_id_string_is_not_split_into_characters():
    """``deny="small"`` used to deny the models 's', 'm', 'a', 'l', 'l' (and route to 'small')."""
    for name in ("allow", "deny"):
        with pytest.raises(ValueError, match=name):
            build_route_request("q", **{name: "small"})
        with pytest.raises(ValueError, match=name):
            build_complete_request("q", **{name: "small"})
    assert list(build_route_request("q", deny=("small",)).deny) == ["small"]
    with RouterClient(NOWHERE, timeout=1.0) as client, pytest.raises(ValueError, match="fields"):
        client.update_model(ModelDescriptor("m", 0.1, 0.2), fields="context_window")


@pytest.mark.parametrize("build, kwargs, name", [
    (build_route_request, {"think_budget": -1}, "think_budget"),
    (build_route_request, {"think_budget": True}, "think_budget"),
    (build_route_request, {"prompt_tokens": -3}, "prompt_tokens"),
    (build_route_request, {"prompt_tokens": 2.5}, "prompt_tokens"),
    (build_route_request, {"min_context_window": 1.5}, "min_context_window"),
    (build_route_request, {"knob": "x"}, "knob"),
    (build_route_request, {"knob": True}, "knob"),
    (build_complete_request, {"max_rounds": -1}, "max_rounds"),
    (build_complete_request, {"max_rounds": 2**40}, "max_rounds"),
])  # fmt: skip
def test_bad_numbers_name_their_argument(build, kwargs, name):
    with pytest.raises(ValueError, match=name):
        build("q", **kwargs)


def test_list_models_page_size_is_checked():
    with RouterClient(NOWHERE, timeout=1.0) as client:
        with pytest.raises(ValueError, match="page_size"):
            client.list_models(page_size=-1)
        with pytest.raises(ValueError, match="page_size"):
            client.list_models_page(page_size=-1)
