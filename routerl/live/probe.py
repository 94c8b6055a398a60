"""Probing a live model: run a probe set, score the answers, build its descriptor.

A probe set is a JSONL(.gz) file in the documented outcome-row format; only ``prompt_id``,
``task``, ``domain``, ``prompt`` and ``gold_answer`` are read (the first row of each prompt id
wins, so the shared outcome files work as they are; ``split='probe'`` keeps only probe-split
prompts). Each prompt is sent as one user message; the answer is scored with the task's scorer
(``routerl.live.scorers``) and kept as a ``ProbeRecord``.

Resumable: with a state file, every finished probe is appended to it (one JSON line, flushed at
once); a rerun reads it and skips the prompts already done, so an interrupted run loses at most
the probes in flight. Failed probes are not written: a rerun asks them again. The state file
records which model answered; a state file of another model is refused.

The descriptor's evidence is computed by ``routerl.descriptors.build.probe_evidence`` -- the
same function behind the offline descriptors -- from (prompt_id, domain, score, completion
tokens), so a model probed live and the same model described from recorded probe rows get
identical ``sample_scores``, ``sample_counts``, ``probe_results`` and ``mean_output_tokens``.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
import threading
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

from routerl.data.outcomes import OutcomeDataError, iter_json_rows
from routerl.data.splits import split_of
from routerl.descriptors.build import probe_evidence
from routerl.descriptors.model import Endpoint, ModelDescriptor
from routerl.live.errors import ProviderError
from routerl.live.progress import Progress
from routerl.live.provider import ChatProvider
from routerl.live.scorers import SCORERS, scorer_name_for

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProbeItem:
    """One probe prompt with its gold answer."""

    prompt_id: str
    task: str
    domain: str
    prompt: str
    gold_answer: str


def load_probe_set(
    path: str | Path, *, split: str | None = None, limit: int | None = None, per_task: int | None = None
) -> list[ProbeItem]:
    """Probe prompts from a JSONL(.gz) file (see the module docstring), in file order.

    ``split``: keep only prompts of that split (e.g. ``probe``); ``per_task``: keep the first N
    prompts of each task; ``limit``: keep the first N in all. Errors name the file, line and field.
    """
    items: list[ProbeItem] = []
    seen: set[str] = set()
    per_task_count: dict[str, int] = {}
    for lineno, row in iter_json_rows(path):
        where = f"{path}:{lineno}"
        pid = row.get("prompt_id")
        if not isinstance(pid, str) or not pid:
            raise OutcomeDataError(f"{where}: field 'prompt_id' is missing")
        if pid in seen or (split is not None and split_of(pid) != split):
            continue
        prompt = row.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise OutcomeDataError(f"{where}: field 'prompt' is missing")
        gold = row.get("gold_answer")
        if gold is None or str(gold) == "":
            raise OutcomeDataError(f"{where}: field 'gold_answer' is missing (a probe needs a gold answer)")
        task = row.get("task") or ""
        if not isinstance(task, str):
            raise OutcomeDataError(f"{where}: field 'task' must be a string")
        domain = row.get("domain") or task or "general"  # the rule of load_outcomes
        if not isinstance(domain, str):
            raise OutcomeDataError(f"{where}: field 'domain' must be a string")
        seen.add(pid)
        if per_task is not None:
            if per_task_count.get(task, 0) >= per_task:
                continue
            per_task_count[task] = per_task_count.get(task, 0) + 1
        items.append(ProbeItem(pid, task, domain, prompt, str(gold)))
        if limit is not None and len(items) >= limit:
            break
    if not items:
        raise OutcomeDataError(f"{path}: no probe prompts" + (f" in split {split!r}" if split else ""))
    return items


@dataclass(frozen=True)
class ProbeRecord:
    """The scored answer to one probe prompt (one line of the state file)."""

    prompt_id: str
    task: str
    domain: str
    score: float
    scorer: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    latency_ms: float
    model_name: str
    response: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)


class ProbeState:
    """The append-only JSONL file of finished probes (thread-safe appends)."""

    def __init__(self, path: str | Path, model_name: str):
        self.path = Path(path)
        self.model_name = model_name
        self._lock = threading.Lock()

    def load(self) -> dict[str, ProbeRecord]:
        """Finished probes by prompt id. A torn last line (a killed run) is ignored."""
        if not self.path.exists():
            return {}
        done: dict[str, ProbeRecord] = {}
        lines = self.path.read_text(encoding="utf-8").splitlines()
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
                record = ProbeRecord(**raw)
            except (json.JSONDecodeError, TypeError) as exc:
                if n == len(lines):
                    log.warning("%s:%d: ignoring an incomplete last line (an interrupted run)", self.path, n)
                    continue
                raise ValueError(f"{self.path}:{n}: not a probe record ({exc})") from None
            if record.model_name != self.model_name:
                raise ValueError(
                    f"{self.path}:{n}: field 'model_name' is {record.model_name!r}, but this run probes "
                    f"{self.model_name!r}; use another --state file"
                )
            done[record.prompt_id] = record
        return done

    def append(self, record: ProbeRecord) -> None:
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(record.to_json() + "\n")
                handle.flush()


@dataclass
class ProbeRun:
    """What a probe run produced: every finished record (including those of earlier runs) and
    the prompts that failed this time (prompt id -> reason)."""

    records: dict[str, ProbeRecord] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    resumed: int = 0
    asked: int = 0

    @property
    def complete(self) -> bool:
        return not self.failures


def score_answer(item: ProbeItem, text: str, scorer_overrides: Mapping[str, str] | None = None) -> tuple[float, str]:
    """(score, scorer name) of ``text`` as an answer to ``item``."""
    name = scorer_name_for(item.task, (scorer_overrides or {}).get(item.task))
    return float(SCORERS[name](text, item.gold_answer)), name


def run_probes(
    provider: ChatProvider,
    items: Sequence[ProbeItem],
    *,
    concurrency: int = 4,
    state: ProbeState | None = None,
    scorer_overrides: Mapping[str, str] | None = None,
    show_progress: bool = True,
    on_record: Callable[[ProbeRecord], None] | None = None,
) -> ProbeRun:
    """Ask every probe prompt not already in ``state``, ``concurrency`` at a time; score, save.

    A provider failure is kept in ``ProbeRun.failures`` (the run goes on); an interrupt
    (Ctrl-C) cancels the prompts not yet sent and re-raises, with everything finished saved.
    """
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"field 'concurrency': must be an integer >= 1, got {concurrency!r}")
    for task, name in (scorer_overrides or {}).items():
        if name not in SCORERS:
            raise ValueError(f"field 'scorer.{task}': unknown scorer {name!r}; expected one of {', '.join(SCORERS)}")
    wanted = {item.prompt_id for item in items}
    done = {pid: r for pid, r in (state.load() if state else {}).items() if pid in wanted}
    run = ProbeRun(records=dict(done), resumed=len(done))
    todo = [item for item in items if item.prompt_id not in done]
    run.asked = len(todo)
    progress = Progress(len(items), f"probing {provider.model_id}", enabled=show_progress and bool(todo), initial=len(done))

    def ask(item: ProbeItem) -> ProbeRecord:
        answer = provider.complete([{"role": "user", "content": item.prompt}])
        score, scorer = score_answer(item, answer.text, scorer_overrides)
        return ProbeRecord(
            item.prompt_id, item.task, item.domain, score, scorer, answer.prompt_tokens, answer.completion_tokens,
            answer.cost_usd, round(answer.latency_ms, 1), provider.endpoint.model_name, answer.text,
        )

    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="probe")
    try:
        pending = {}
        queue = iter(todo)
        for item in queue:  # keep at most `concurrency` in flight, so an interrupt wastes little
            pending[pool.submit(ask, item)] = item
            if len(pending) >= concurrency:
                break
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                item = pending.pop(future)
                try:
                    record = future.result()
                except ProviderError as exc:
                    run.failures[item.prompt_id] = f"{exc.kind}: {exc.reason}"
                    log.warning("probe %s failed: %s", item.prompt_id, run.failures[item.prompt_id])
                else:
                    if state is not None:
                        state.append(record)
                    run.records[item.prompt_id] = record
                    if on_record is not None:
                        on_record(record)
                progress.update(1)
                nxt = next(queue, None)
                if nxt is not None:
                    pending[pool.submit(ask, nxt)] = nxt
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        progress.close()
    return run


def descriptor_from_probes(
    model_id: str,
    records: Mapping[str, ProbeRecord] | Sequence[ProbeRecord],
    *,
    input_price_per_mtok: float,
    output_price_per_mtok: float,
    endpoint: Endpoint | None = None,
    order: Sequence[str] | None = None,
    **extra,
) -> ModelDescriptor:
    """The descriptor of a probed model: prices, endpoint, evidence from its probe records
    (``probe_evidence``, as offline), and the median probe latency as ``latency_ms``.

    ``order``: the prompt ids in probe-set order (the order of ``probe_results``; default: as given).
    """
    by_id = dict(records) if isinstance(records, Mapping) else {r.prompt_id: r for r in records}
    ids = [pid for pid in order if pid in by_id] if order is not None else list(by_id)
    if not ids:
        raise ValueError(f"model {model_id!r}: no finished probes; nothing to describe")
    evidence = probe_evidence(
        (pid, by_id[pid].domain, by_id[pid].score, float(by_id[pid].completion_tokens)) for pid in ids
    )
    latency = statistics.median(by_id[pid].latency_ms for pid in ids)
    return ModelDescriptor(
        id=model_id,
        input_price_per_mtok=float(input_price_per_mtok),
        output_price_per_mtok=float(output_price_per_mtok),
        latency_ms=round(latency, 1) if math.isfinite(latency) else 0.0,
        sample_scores=evidence.sample_scores,
        sample_counts=evidence.sample_counts,
        probe_results=evidence.probe_results,
        mean_output_tokens=evidence.mean_output_tokens,
        endpoint=endpoint,
        **extra,
    )
