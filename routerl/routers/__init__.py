"""Routers: the one ``Router`` interface and its registry (baselines, learned, the RL policy)."""

from routerl.routers.base import (
    MODES,
    Attempt,
    Decision,
    Query,
    Router,
    ScoreRouter,
    knob_for_mode,
    utility,
)

__all__ = ["MODES", "Attempt", "Decision", "Query", "Router", "ScoreRouter", "knob_for_mode", "utility"]
