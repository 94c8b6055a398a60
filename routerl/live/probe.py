"""Probing a live model: run a probe set, score the answers, build its descriptor.

A probe set is a JSONL(.gz) file in the documented outcome-row format; only ``prompt_id``,
``task``, ``domain``, ``prompt`` and ``gold_answer`` are read (the first row of each prompt id
wins, so the shared outcome files work as they are; ``split='probe'`` keeps only probe-split
prompts). Each prompt is sent as one user message; the answer is scored with the task's scorer
(``routerl.live.scorers``) and kept as a ``ProbeRecord``.

Resumable: with a state file, every finished probe is appended to it (one JSON line, flushed at
once); a rerun reads it and skips the prompts already done, so an interrupted run loses at most
the probes in flight. A run killed in the middle of a write leaves a torn last line: the next
load drops it from the file (cutting the file back to its last complete line), so later records
start on a line of their own. Failed probes are not written: a rerun asks them again. The state
file records which model answered; a state file of another model is refused.

Every gold answer is checked against its task's scorer when the probe set is read (and again by
``run_probes``), so a row the scorer cannot use (an ``mmlu_pro`` gold that is not a letter A-J)
is an error before any answer is paid for. A probe whose answer cannot be used (the provider
failed, or anything else went wrong with that one prompt) is a failure of that prompt: the run
goes on, and every answer already received is saved before any error ends the run.

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
from routerl.live.scorers import SCORERS, check_gold, scorer_name_for

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
    path: str | Path, *, split: str | None = None, limit: int | None = None, per_task: int | None = None,
    scorer_overrides: Mapping[str, str] | None = None,
) -> list[ProbeItem]:
    """Probe prompts from a JSONL(.gz) file (see the module docstring), in file order.

    ``split``: keep only prompts of that split (e.g. ``probe``); ``per_task``: keep the first N
    prompts of each task; ``limit``: keep the first N in all. Each kept row's gold answer must
    suit its task's scorer (``scorer_overrides`` as in ``run_probes``). Errors name the file,
    line and field.
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
        item = ProbeItem(pid, task, domain, prompt, str(gold))
        try:
            _check_item(item, scorer_overrides)
        except ValueError as exc:
            raise OutcomeDataError(f"{where}: {exc}") from None
        items.append(item)
        if limit is not None and len(items) >= limit:
            break
    if not items:
        raise OutcomeDataError(f"{path}: no probe prompts" + (f" in split {split!r}" if split else ""))
    return items


def _check_item(item: ProbeItem, scorer_overrides: Mapping[str, str] | None) -> None:
    """``ValueError`` naming the prompt when its gold answer does not suit its scorer."""
    name = scorer_name_for(item.task, (scorer_overrides or {}).get(item.task))
    try:
        check_gold(name, item.gold_answer)
    except ValueError as exc:
        raise ValueError(f"prompt {item.prompt_id!r} (task {item.task!r}, scorer {name!r}): {exc}") from None


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
        """Finished probes by prompt id. A torn last line (a killed run) is ignored and cut from
        the file, so the next append starts a line of its own; a last record without its newline
        gets one. Torn records inside the file (a record that starts ``{"prompt_id"`` but breaks
        off) are ignored too, and a record an older version appended onto a torn one, on the same
        line, is read. Any other line that is not a probe record is an error (not a state file)."""
        if not self.path.exists():
            return {}
        done: dict[str, ProbeRecord] = {}
        with self._lock:
            raw_bytes = self.path.read_bytes()
        # split on the newlines records end with only: str.splitlines would also split a record at a
        # U+2028/U+2029/U+0085 in its text (json.dumps writes them as they are)
        lines = [line.decode("utf-8", errors="replace") for line in raw_bytes.splitlines()]
        torn = False
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = _parse_record(line)
            except TypeError as exc:  # a whole JSON value, so not torn: not a probe record
                raise ValueError(f"{self.path}:{n}: not a probe record ({exc})") from None
            except json.JSONDecodeError as exc:
                record = _record_after_torn_one(line)
                if record is not None:
                    log.warning("%s:%d: dropping a torn record an interrupted run left before this one", self.path, n)
                elif n == len(lines) and (line.startswith(_RECORD_START) or _RECORD_START.startswith(line)):
                    # only a record's beginning is torn: any other last line is not cut from the file
                    log.warning("%s:%d: ignoring an incomplete last line (an interrupted run)", self.path, n)
                    torn = True
                    continue
                elif line.startswith(_RECORD_START):
                    log.warning("%s:%d: ignoring an incomplete record (an interrupted run)", self.path, n)
                    continue
                else:
                    raise ValueError(f"{self.path}:{n}: not a probe record ({exc})") from None
            if record.model_name != self.model_name:
                raise ValueError(
                    f"{self.path}:{n}: field 'model_name' is {record.model_name!r}, but this run probes "
                    f"{self.model_name!r}; use another --state file"
                )
            done[record.prompt_id] = record
        if raw_bytes and not raw_bytes.endswith(b"\n"):
            self._repair(len(raw_bytes), torn)
        return done

    def _repair(self, size: int, torn: bool) -> None:
        """End the file on a newline: cut a torn last line, or finish a complete last record."""
        with self._lock, open(self.path, "r+b") as handle:
            data = handle.read()
            if len(data) != size or data.endswith(b"\n"):
                return  # written meanwhile: leave it to that writer
            if torn:
                handle.truncate(data.rfind(b"\n") + 1)
            else:
                handle.seek(0, 2)
                handle.write(b"\n")

    def append(self, record: ProbeRecord) -> None:
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a+b") as handle:
                handle.seek(0, 2)
                starts_line = handle.tell() == 0
                if not starts_line:
                    handle.seek(-1, 2)
                    starts_line = handle.read(1) == b"\n"
                handle.seek(0, 2)
                handle.write((("" if starts_line else "\n") + record.to_json() + "\n").encode("utf-8"))
                handle.flush()


_RECORD_START = '{"prompt_id"'  # how every record line begins (ProbeRecord.to_json)


def _parse_record(line: str) -> ProbeRecord:
    raw = json.loads(line)
    if not isinstance(raw, dict):
        raise TypeError("not a JSON object")
    return ProbeRecord(**raw)


def _record_after_torn_one(line: str) -> ProbeRecord | None:
    """The record that starts after a torn one on the same line, or None."""
    start = line.rfind(_RECORD_START)
    if start <= 0:
        return None
    try:
        return _parse_record(line[start:])
    except (json.JSONDecodeError, TypeError):
        return None


@dataclass
class ProbeRun:
    """What a probe run produced: every finished record (including those of earlier runs) and
    the prompts that failed this time (prompt id -> reason)."""

    records: dict[str, ProbeRecord] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    resumed: int = 0
    asked: int = 0
    failed_cost_usd: float = 0.0  # what failed probes were billed (answers without content)

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

    Every item's gold answer is checked against its scorer first (``ValueError`` naming the
    prompt, before anything is asked). A prompt that fails -- a provider error, or any other
    error with that one prompt -- is kept in ``ProbeRun.failures`` and the run goes on. An
    interrupt (Ctrl-C) cancels the prompts not yet sent and re-raises, after saving every answer
    already received (those in flight finish first).
    """
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"field 'concurrency': must be an integer >= 1, got {concurrency!r}")
    for task, name in (scorer_overrides or {}).items():
        if name not in SCORERS:
            raise ValueError(f"field 'scorer.{task}': unknown scorer {name!r}; expected one of {', '.join(SCORERS)}")
    for item in items:
        _check_item(item, scorer_overrides)
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

    def settle(future, item: ProbeItem) -> None:
        """Save a finished probe's record, or note its failure."""
        try:
            record = future.result()
        except ProviderError as exc:
            run.failures[item.prompt_id] = f"{exc.kind}: {exc.reason}"
            run.failed_cost_usd += exc.cost_usd
            log.warning("probe %s failed: %s", item.prompt_id, run.failures[item.prompt_id])
        except Exception as exc:  # noqa: BLE001 - one prompt's failure, not the run's
            run.failures[item.prompt_id] = f"error: {type(exc).__name__}: {exc}"
            log.warning("probe %s failed: %s", item.prompt_id, run.failures[item.prompt_id], exc_info=True)
        else:
            if state is not None:
                state.append(record)
            run.records[item.prompt_id] = record
            if on_record is not None:
                on_record(record)

    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="probe")
    pending: dict = {}
    try:
        queue = iter(todo)
        for item in queue:  # keep at most `concurrency` in flight, so an interrupt wastes little
            pending[pool.submit(ask, item)] = item
            if len(pending) >= concurrency:
                break
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                settle(future, pending.pop(future))
                progress.update(1)
                nxt = next(queue, None)
                if nxt is not None:
                    pending[pool.submit(ask, nxt)] = nxt
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        try:  # an interrupt or an error left these: save the answers that came (they are paid for)
            for future, item in list(pending.items()):
                if future.done() and not future.cancelled():
                    settle(future, item)
        finally:
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
