"""Shared fixtures. Tests that need the shared data read it from ``../shared/data`` (or
``$ROUTERL_SHARED_DATA``) and skip with a clear message when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Servers started by tests without --router use the dependency-free descriptor-score router (the
# shipped policy is the product default; tests of the policy default unset this themselves).
os.environ.setdefault("ROUTERL_DEFAULT_ROUTER", "descriptor-score")
SHARED_DATA = Path(os.environ.get("ROUTERL_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared_file(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"shared data not found: {path} (set ROUTERL_SHARED_DATA or place ../shared/data beside the repo)")
    return path


@pytest.fixture(scope="session")
def synthetic_world():
    """(table, splits, latent models) of a small seeded synthetic world."""
    from routerl.data.synthetic import SyntheticWorld

    return SyntheticWorld(seed=7, n_seen=6, n_unseen=3, n_prompts=400).build()


@pytest.fixture(scope="session")
def zeroeval_table():
    from routerl.data import load_outcomes

    return load_outcomes(shared_file("zeroeval.jsonl.gz"))


@pytest.fixture(scope="session")
def shared_splits():
    from routerl.data import Splits

    return Splits.load(shared_file("splits.json"))
