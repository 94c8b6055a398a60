"""The committed generated gRPC code matches ``proto/routerl/v1/router.proto``."""

from __future__ import annotations

import pytest

pytest.importorskip("grpc_tools", reason="grpcio-tools is needed to regenerate the code")

from routerl.server import codegen  # noqa: E402


def test_generated_code_is_up_to_date():
    stale = codegen.stale_files()
    assert not stale, f"out of date: {stale}; run python -m routerl.server.codegen"


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
