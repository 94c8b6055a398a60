"""The committed generated gRPC code matches ``proto/routerl/v1/router.proto``."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("grpc_tools", reason="grpcio-tools is needed to regenerate the code")

from routerl.server import codegen  # noqa: E402


def test_generated_code_is_up_to_date():
    stale = codegen.stale_files()
    assert not stale, f"out of date: {stale}; run python -m routerl.server.codegen"


def test_stub_needs_only_the_grpcio_the_project_declares():
    """The stub's import check asks for pyproject's grpcio floor, not the tools' own version (code
    written by grpcio-tools 1.85.4 refused to import beside grpcio 1.85.1)."""
    pyproject = (codegen.REPO / "pyproject.toml").read_text(encoding="utf-8")
    floor = re.search(r'^\s*"grpcio>=([\d.]+)"', pyproject, re.MULTILINE).group(1)
    assert codegen.GRPCIO_FLOOR.startswith(floor) or floor.startswith(codegen.GRPCIO_FLOOR)
    text = (codegen.OUT_DIR / "router_pb2_grpc.py").read_text(encoding="utf-8")
    assert f"GRPC_GENERATED_VERSION = '{codegen.GRPCIO_FLOOR}'" in text


def test_version_stamps_are_not_compared_but_code_is():
    text = (codegen.OUT_DIR / "router_pb2.py").read_text(encoding="utf-8")
    restamped = re.sub(r"Protobuf Python Version: \S+", "Protobuf Python Version: 7.99.0", text)
    restamped = re.sub(r"(Domain\.PUBLIC,\s*)\d+,\s*\d+,\s*\d+,", r"\g<1>7,\n    99,\n    0,", restamped)
    assert restamped != text
    assert codegen.without_version_stamps(restamped) == codegen.without_version_stamps(text)
    assert codegen.without_version_stamps(text.replace("RouteRequest", "RouteRequestX")) != codegen.without_version_stamps(text)


def test_generated_stub_imports_relatively():
    text = (codegen.OUT_DIR / "router_pb2_grpc.py").read_text(encoding="utf-8")
    assert "from . import router_pb2" in text and "from routerl.v1" not in text


def test_service_shape():
    from routerl.server.proto import router_pb2 as pb

    service = pb.DESCRIPTOR.services_by_name["Router"]
    assert service.full_name == "routerl.v1.Router"
    assert {m.name for m in service.methods} == {"Route", "RegisterModel", "UpdateModel", "RemoveModel", "GetModel", "ListModels",
                                                 "Complete", "CompleteStream"}
    assert [m.name for m in service.methods if m.server_streaming] == ["CompleteStream"]
    fields = {f.name for f in pb.ModelDescriptor.DESCRIPTOR.fields}
    assert {"id", "input_price_per_mtok", "output_price_per_mtok", "latency_ms", "context_window", "sample_scores",
            "description", "tags", "sample_counts", "probe_results", "mean_output_tokens", "endpoint"} <= fields
    assert "query" in pb.RouteRequest.DESCRIPTOR.fields_by_name
    assert "model_id" in pb.RouteResponse.DESCRIPTOR.fields_by_name
    assert "models" in pb.ListModelsResponse.DESCRIPTOR.fields_by_name
    assert "id" in pb.RemoveModelRequest.DESCRIPTOR.fields_by_name and "id" in pb.GetModelRequest.DESCRIPTOR.fields_by_name
    request = pb.CompleteRequest.DESCRIPTOR.fields_by_name
    route = pb.RouteRequest.DESCRIPTOR.fields_by_name
    for name in ("query", "knob", "mode", "allow", "deny", "limits", "domain", "prompt_tokens", "request_id"):
        assert request[name].number == route[name].number and request[name].type == route[name].type, name
    assert {"max_rounds", "budget_usd", "key_id"} <= set(request)
    assert {"answer", "model_id", "attempts", "total_cost_usd", "think", "request_id", "router", "stop"} <= set(
        pb.CompleteResponse.DESCRIPTOR.fields_by_name)
