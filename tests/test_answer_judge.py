"""The answer judge in the policy's loop: fit on the pooled learned evidence, its note ends each
``<info>`` block in training episodes and served transcripts alike, the ``check`` teacher follows
it, and it travels with a checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from routerl.data.embeddings import HashEmbedder
from routerl.env import EnvConfig, RoutingEnv
from routerl.env.actions import format_route
from routerl.policy.loading import TinySpec, load_base
from routerl.policy.router import CONFIG_FILE, EVIDENCE_FILE, PolicyConfig, PolicyRouter, load_policy_router
from routerl.routers.base import Attempt
from routerl.routers.cascade import JUDGE_FILE, MARGINS, AnswerJudge, fit_pooled_judge
from routerl.routers.learned_evidence import fit_pooled_evidence
from routerl.train.teacher import next_choice


@pytest.fixture(scope="module")
def pooled(synthetic_world):
    table, splits, _ = synthetic_world
    return fit_pooled_evidence([(table, splits)], HashEmbedder(), folds=2, max_iter=40, seed=0)


@pytest.fixture(scope="module")
def judge(synthetic_world, pooled):
    table, splits, _ = synthetic_world
    judge, info = fit_pooled_judge([(table, splits)], pooled, max_rounds=3, seed=0)
    assert judge.margin in MARGINS and info["check_rows"] > 1000 and len(info["val_aiq_by_margin"]) == len(MARGINS)
    return judge


@pytest.fixture(scope="module")
def env(synthetic_world, pooled, judge):
    table, splits, _ = synthetic_world
    return RoutingEnv(table, splits, EnvConfig(min_pool=5, max_pool=6, max_rounds=3, shortlist=3), evidence=pooled, judge=judge)


def test_info_blocks_end_with_the_judges_note_and_the_teacher_follows_it(env, judge):
    rng = np.random.default_rng(0)
    escalated = accepted = 0
    for _ in range(40):
        ep = env.sample_episode(rng)
        result = ep.step(format_route(0))
        p, k, value = ep.judge_now()
        assert result.info.endswith(f" | {AnswerJudge.format(p, k, value)}</info>")
        choice, why = next_choice(ep, "descriptor", "check")
        assert choice == (k if value > 0 else None) and why.startswith(f"check {p:.2f}")
        escalated += choice is not None
        accepted += choice is None
    assert escalated and accepted  # both decisions occur on the synthetic world


def test_the_check_teacher_needs_a_judge(synthetic_world, pooled):
    table, splits, _ = synthetic_world
    bare = RoutingEnv(table, splits, EnvConfig(min_pool=5, max_pool=6, max_rounds=3, shortlist=3), evidence=pooled)
    ep = bare.sample_episode(np.random.default_rng(1))
    ep.step(format_route(0))
    assert "check" not in ep.info_text(0)
    with pytest.raises(ValueError, match="answer judge"):
        next_choice(ep, "descriptor", "check")


def test_served_transcript_shows_the_notes_the_episode_showed(env, pooled, judge):
    """Serving renders an earlier answer's block exactly as an evaluation episode did after the
    same calls (same estimates: a val prompt gets the full regressor in both)."""
    torch.set_num_threads(1)
    router = PolicyRouter(*load_base("tiny", tiny=TinySpec(seed=5)), PolicyConfig(mode="fast", max_rounds=3, shortlist=3),
                          evidence=pooled.serving(), judge=judge)  # fmt: skip
    table = env.table
    prompt = int(table.prompts_in("val")[0])
    pool = np.flatnonzero(table.available[prompt] & env.seen)
    ep = env.episode(prompt, pool, 0.1, training=False)
    infos = [ep.step(format_route(k)).info for k in (0, 1)]
    descs = [env.descriptors[table.models[j]] for j in pool]
    attempts = [Attempt(ep.spec.descriptors[k].id, ep.responses[k], ep.costs[k]) for k in (0, 1)]
    shown, estimates, _ = router.view(ep.spec.query, descs, 0.1, attempts)
    assert [d.id for d in shown] == [d.id for d in ep.spec.descriptors]
    np.testing.assert_allclose(estimates, ep.spec.evidence)
    text = router.prompt_text(ep.spec.query, shown, 0.1, attempts, estimates)
    assert text.endswith(format_route(0) + infos[0] + format_route(1) + infos[1])
    assert router.decide(ep.spec.query, descs, 0.1, attempts).model_id in {d.id for d in descs}


def test_judge_travels_with_a_checkpoint(tmp_path, synthetic_world, judge):
    """``env.answer_judge`` in a train config fits and saves the judge; a checkpoint loads it,
    ship copies it and refuses a judged checkpoint without it."""
    from peft import LoraConfig, get_peft_model

    from routerl.train.config import ConfigError, load_config
    from routerl.train.episodes import build_envs, save_evidence
    from routerl.train.ship import ship

    overrides = [
        "data.synthetic={seed: 7, n_seen: 6, n_unseen: 3, n_prompts: 400}",
        "env.shortlist=2", "env.max_rounds=3", "env.answer_judge=true", "sft.escalation=check",
        "env.evidence={router: learned, options: {max_iter: 30}, embedder: hash}",
        "model.base=tiny",
    ]  # fmt: skip
    config = load_config("configs/grpo_tiny.yaml", overrides)
    envs = build_envs(config)
    assert isinstance(envs[0].judge, AnswerJudge)
    model, tok = load_base("tiny", tiny=TinySpec(seed=5))
    get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj"], task_type="CAUSAL_LM")).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    save_evidence(envs, tmp_path)
    assert AnswerJudge.load(tmp_path / JUDGE_FILE) == envs[0].judge
    cfg = {"model": {"base": "tiny", "tiny": {"seed": 5}}, "policy": {"mode": "fast", "max_rounds": 3},
           "env": {"shortlist": 2, "answer_judge": True, "evidence": {"router": "learned", "options": {}, "embedder": "hash"}}}  # fmt: skip
    (tmp_path / CONFIG_FILE).write_text(yaml.safe_dump(cfg))
    assert load_policy_router(tmp_path).judge == envs[0].judge
    (tmp_path / CONFIG_FILE).write_text(yaml.safe_dump(dict(cfg, model={"base": "smollm2-135m-instruct"})))
    assert JUDGE_FILE in {f.name for f in ship(tmp_path, tmp_path / "shipped")}
    (tmp_path / JUDGE_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=JUDGE_FILE):
        ship(tmp_path, tmp_path / "shipped2")
    (tmp_path / CONFIG_FILE).write_text(yaml.safe_dump(cfg))
    with pytest.raises(ValueError, match=JUDGE_FILE):
        load_policy_router(tmp_path)
    (tmp_path / JUDGE_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="answer-judge"):
        load_policy_router(tmp_path)
    with pytest.raises(ConfigError, match="sft.escalation"):
        load_config("configs/grpo_tiny.yaml", overrides[:2] + ["sft.escalation=check", "model.base=tiny"])
    with pytest.raises(ConfigError, match="env.answer_judge"):
        load_config("configs/grpo_tiny.yaml", [overrides[0], "env.answer_judge=true", "model.base=tiny"])
    assert (tmp_path / EVIDENCE_FILE).exists()


def test_sft_examples_can_be_balanced_toward_escalations():
    from routerl.train.sft import escalates, pick_examples

    keep = ("p", ["<route>1</route>", "<info>..</info>", "<accept/>"])
    esc = ("p", ["<route>1</route>", "<info>..</info>", "<route>2</route>"])
    assert escalates(esc[1]) and not escalates(keep[1]) and not escalates(["<route>1</route>"])
    played = [keep] * 9 + [esc] + [keep] * 5 + [esc] * 5
    assert pick_examples(played, 10, 0.0) == played[:10]
    picked = pick_examples(played, 10, 0.3)
    assert len(picked) == 10 and sum(escalates(p) for _, p in picked) == 3
    assert sum(escalates(p) for _, p in pick_examples(played, 10, 1.0)) == 6  # as many as there are


def test_note_agreement_pairs_each_note_with_the_next_decision():
    """``routerl.eval.note_agreement``: every decision after an answer is paired with the verdict
    of the note the policy read for that answer; first calls are not counted."""
    from routerl.eval.note_agreement import NoteAgreement, NoteRecorder, verdict
    from routerl.routers.base import Attempt, Decision

    assert verdict(AnswerJudge.format(0.44, 1, 0.33)) == "call"
    assert verdict(AnswerJudge.format(0.93, 1, -0.2)) == "keep" and verdict(AnswerJudge.format(0.9, None, 0.0)) == "keep"
    with pytest.raises(ValueError, match="not an answer judge note"):
        verdict("hello")

    class Fake:
        name, max_rounds, judge = "policy", 3, object()

        def decide(self, query, candidates, knob, attempts=()):
            if not attempts:
                return Decision("route", "a", [("a", 0.9), ("b", 0.1)])
            return Decision("accept", "a", [("a", 0.7), ("b", 0.3)]) if knob < 1 else Decision("route", "b", [("b", 0.6), ("a", 0.4)])

        def view(self, query, candidates, knob, attempts):
            return list(candidates), (0.5, 0.5), []

        def judge_notes(self, query, shown, knob, attempts, estimates):
            return ["check 0.40: call [2] (+0.10)" if knob > 0 else "check 0.90: keep (-0.30)"]

    rec = NoteRecorder(Fake())
    first = [Attempt("a", "The answer is 4.", 0.001)]
    rec.decide(None, ["a", "b"], 0.0)  # a first call: no note, not counted
    for knob in (0.0, 0.5, 2.0, 2.0):
        rec.decide(None, ["a", "b"], knob, first)
    got = rec.agreement
    assert got.counts == {("keep", "accept"): 1, ("call", "accept"): 1, ("call", "route"): 2}
    assert got.followed == 3 and got.total == 4
    assert got.accept_probs["call"] == [0.7, 0.4, 0.4] and got.accept_probs["keep"] == [0.7]
    both = NoteAgreement()
    both.merge(got)
    both.merge(got)
    assert both.total == 8 and "6 of 8 decisions after an answer follow the note (0.750)" in both.report()
    with pytest.raises(ValueError, match="no answer judge"):
        NoteRecorder(type("NoJudge", (), {"judge": None})())


def test_escalating_examples_can_be_balanced_within_each_dataset():
    """``sft.escalation_share_per_dataset``: each dataset keeps its count among the first ``n``
    sampled and gets ``share`` of them escalating, whatever the other dataset has."""
    from routerl.train.sft import escalates, pick_examples

    keep = ["<route>1</route>", "<info>..</info>", "<accept/>"]
    esc = ["<route>1</route>", "<info>..</info>", "<route>2</route>"]
    # dataset 0 escalates often, dataset 1 rarely; 6 of the first 10 sampled are dataset 0
    kinds = [esc, keep, esc, keep, esc, esc] + [keep] * 4 + [esc] * 4 + [keep] * 3 + [keep] * 6 + [esc, keep]
    groups = [0] * 6 + [1] * 4 + [0] * 7 + [1] * 6 + [1, 1]
    played = [(f"p{i}", pieces) for i, pieces in enumerate(kinds)]
    pooled = pick_examples(played, 10, 0.5)
    assert sum(escalates(p) for _, p in pooled) == 5
    assert sum(groups[int(name[1:])] == 0 for name, p in pooled if escalates(p)) == 5  # all from dataset 0
    per = pick_examples(played, 10, 0.5, groups)
    assert [name for name, _ in per] == sorted((name for name, _ in per), key=lambda n: int(n[1:]))  # sampled order
    by_group = {0: [], 1: []}
    for name, pieces in per:
        by_group[groups[int(name[1:])]].append(escalates(pieces))
    assert len(by_group[0]) == 6 and sum(by_group[0]) == 3  # its 6 examples, half escalating (4 of its first 6 did)
    assert len(by_group[1]) == 4 and sum(by_group[1]) == 1  # its 4: 2 wanted, only 1 exists
    assert pick_examples(played, 10, 0.0, groups) == played[:10]
