"""Shared pieces of the live tests (no tests here): a replay endpoint over the shared ZeroEval
data, the probe slice, and a fault hook that tests script per model.

All traffic stays on 127.0.0.1; every server is stopped by its fixture.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from routerl.live.replay import Fault, ReplayBook, ReplayServer, load_responses
from tests.conftest import shared_file

UNSEEN = "claude-3-5-haiku-20241022"  # an unseen model of splits.json: no router trained on it
CHEAP = "gpt-4o-mini-2024-07-18"
STRONG = "claude-3-5-sonnet-20241022"
FLAKY = "Qwen2.5-72B-Instruct"
REPLAY_MODELS = (UNSEEN, CHEAP, STRONG, FLAKY)
PER_TASK = 10  # probe slice: the first 10 probe prompts of each task, in table order


def probe_slice(table, model: str = UNSEEN, per_task: int = PER_TASK) -> np.ndarray:
    """Table indices of the first ``per_task`` probe prompts of each task that ``model`` answered."""
    j = table.model_index(model)
    chosen: list[int] = []
    counts: dict[str, int] = {}
    for i in table.prompts_in("probe"):
        if table.available[i, j] and counts.get(table.task[i], 0) < per_task:
            counts[table.task[i]] = counts.get(table.task[i], 0) + 1
            chosen.append(int(i))
    return np.asarray(chosen)


class ScriptedFaults:
    """A fault hook: ``plan[model]`` is a function (hit number -> Fault or None). Thread-safe
    enough for tests (the server calls it from handler threads)."""

    def __init__(self):
        self.plan: dict = {}
        self.lock = threading.Lock()

    def __call__(self, model: str, prompt_id: str, hit: int):
        rule = self.plan.get(model)
        return rule(hit) if rule else None

    def always(self, model: str, fault: Fault) -> None:
        self.plan[model] = lambda hit: fault

    def first(self, model: str, n: int, fault: Fault) -> None:
        self.plan[model] = lambda hit: fault if hit <= n else None

    def clear(self) -> None:
        self.plan.clear()


_BOOKS: dict = {}


@pytest.fixture()
def replay_book(zeroeval_table):
    """The replayed models' recorded answers (read once per test session)."""
    if "book" not in _BOOKS:
        responses = load_responses(shared_file("zeroeval_responses.jsonl.gz"), REPLAY_MODELS)
        _BOOKS["book"] = ReplayBook.from_table(zeroeval_table, responses, REPLAY_MODELS)
    return _BOOKS["book"]


@pytest.fixture()
def replay(replay_book):
    """A fresh replay server (fresh hit counters) with a scriptable fault hook."""
    faults = ScriptedFaults()
    server = ReplayServer(replay_book, fault=faults).start()
    server.faults = faults
    yield server
    server.stop()
