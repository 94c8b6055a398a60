"""The routing environment over recorded outcomes: episodes of route / read / accept."""

from routerl.env.actions import ACCEPT_TAG, Action, parse_action
from routerl.env.episode import Episode, EpisodeSpec, StepResult
from routerl.env.routing_env import EnvConfig, RoutingEnv

__all__ = [
    "ACCEPT_TAG",
    "Action",
    "parse_action",
    "Episode",
    "EpisodeSpec",
    "StepResult",
    "EnvConfig",
    "RoutingEnv",
]
