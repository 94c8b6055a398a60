"""Does a judged policy do what its answer judge's note says? A diagnostic for ``env.answer_judge``.

    python -m routerl.eval.note_agreement --checkpoint runs/policy_smollm2-judge-balanced/final \\
        --data ../shared/data/zeroeval.jsonl.gz --splits ../shared/data/splits.json --sample 20 --knobs 0,0.1,1

A policy trained with an answer judge reads, at the end of each answer's ``<info>`` block, a note
such as ``check 0.44: call [2] (+0.33)`` or ``check 0.93: keep (-0.20)`` (``AnswerJudge.format``).
This runs the policy as ``routerl eval`` does (the full pool of a seeded sample of test prompts,
each knob, its calls followed through the recorded answers) and, at every decision after an
answer, pairs the verdict of the note the policy just read with what it did. Printed: the 2 x 2
table of verdict (call / keep) x decision (route / accept), the share of decisions that follow
the note, and the mean probability the policy gave to accepting under each verdict. A policy that
reads the note has most decisions on the diagonal and a clearly lower accept probability after
``call``; one that ignores it has the same accept probability under both verdicts.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from typing import Sequence

from routerl.eval.recording import DecisionRecorder

VERDICT = re.compile(r": (call|keep)\b")  # AnswerJudge.format: "check 0.44: call [2] (+0.33)" / "check 0.93: keep (-0.20)"


def verdict(note: str) -> str:
    """``call`` or ``keep``: the verdict word of a judge note."""
    m = VERDICT.search(note)
    if m is None:
        raise ValueError(f"not an answer judge note: {note!r}")
    return m.group(1)


@dataclass
class NoteAgreement:
    """Counts of (verdict, decision) pairs and the accept probabilities under each verdict."""

    counts: dict[tuple[str, str], int] = field(default_factory=dict)
    accept_probs: dict[str, list[float]] = field(default_factory=lambda: {"call": [], "keep": []})

    def merge(self, other: "NoteAgreement") -> None:
        for key, n in other.counts.items():
            self.counts[key] = self.counts.get(key, 0) + n
        for v, probs in other.accept_probs.items():
            self.accept_probs[v].extend(probs)

    def add(self, verdict_word: str, action: str, p_accept: float) -> None:
        self.counts[(verdict_word, action)] = self.counts.get((verdict_word, action), 0) + 1
        self.accept_probs[verdict_word].append(p_accept)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def followed(self) -> int:
        return self.counts.get(("call", "route"), 0) + self.counts.get(("keep", "accept"), 0)

    def report(self) -> str:
        lines = ["| note says | policy routes | policy accepts | mean P(accept) |", "|---|---|---|---|"]
        for v in ("call", "keep"):
            probs = self.accept_probs[v]
            mean = f"{sum(probs) / len(probs):.3f}" if probs else "-"
            lines.append(f"| {v} | {self.counts.get((v, 'route'), 0)} | {self.counts.get((v, 'accept'), 0)} | {mean} |")
        share = f"{self.followed / self.total:.3f}" if self.total else "-"
        lines.append(f"\n{self.followed} of {self.total} decisions after an answer follow the note ({share}).")
        return "\n".join(lines)


class NoteRecorder(DecisionRecorder):
    """Wraps a judged ``PolicyRouter``: every decision after an answer is recorded with the verdict
    of the note the policy read for that answer (``PolicyRouter.judge_notes``)."""

    def __init__(self, router):
        if getattr(router, "judge", None) is None:
            raise ValueError("the policy has no answer judge (answer_judge.json): nothing to agree with")
        super().__init__(router)
        self.agreement = NoteAgreement()

    def record(self, query, candidates, knob: float, attempts: Sequence, decision) -> None:
        if not attempts:
            return
        shown, estimates, _ = self.router.view(query, candidates, knob, attempts)
        notes = self.router.judge_notes(query, shown, knob, attempts, estimates)
        if notes:
            p_accept = dict(decision.ranking).get(attempts[-1].model_id, 0.0)
            self.agreement.add(verdict(notes[-1]), decision.action, float(p_accept))


def main(argv: Sequence[str] | None = None) -> int:
    from routerl.cli import CliError
    from routerl.cli.cmd_eval import parse_knobs
    from routerl.data import Splits, load_outcomes
    from routerl.descriptors import build_descriptors
    from routerl.eval.runner import evaluation_prompts, run_router
    from routerl.policy.router import load_policy_router

    ap = argparse.ArgumentParser(prog="python -m routerl.eval.note_agreement", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="a policy checkpoint with answer_judge.json")
    ap.add_argument("--data", action="append", required=True, metavar="TABLE", help="an outcome table (repeatable)")
    ap.add_argument("--splits", required=True, help="splits.json")
    ap.add_argument("--sample", type=int, default=20, help="test prompts per dataset (seeded sample; default 20)")
    ap.add_argument("--knobs", default="0,0.1,1", help="comma-separated knobs (default 0,0.1,1)")
    ap.add_argument("--seed", type=int, default=0, help="sample seed (default 0, as routerl eval)")
    args = ap.parse_args(argv)
    try:
        if args.seed < 0:
            raise ValueError(f"--seed must be >= 0, got {args.seed}")
        knobs = parse_knobs(args.knobs)  # the flags and the splits before the model loads
        splits = Splits.load(args.splits)
        recorder = NoteRecorder(load_policy_router(args.checkpoint))
        overall = NoteAgreement()
        for path in args.data:
            table = load_outcomes(path)
            prompts = evaluation_prompts(table, "test", sample=args.sample, seed=args.seed)
            recorder.agreement = NoteAgreement()
            rows = list(run_router(recorder, recorder.name, table, splits, prompts, build_descriptors(table), ["full"], knobs))
            calls = sum(len(r["models"]) for r in rows) / max(len(rows), 1)
            print(f"\n{table.name}: {len(prompts)} test prompts x {len(knobs)} knobs, full pool, {calls:.2f} calls per query\n")
            print(recorder.agreement.report())
            overall.merge(recorder.agreement)
        if len(args.data) > 1:
            print("\nall datasets\n")
            print(overall.report())
    except (OSError, ValueError, CliError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
