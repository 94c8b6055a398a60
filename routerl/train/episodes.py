"""Episodes for training: the environments from ``data``, a fixed bank of training episodes and a
fixed set of validation episodes.

Training episodes come from ``RoutingEnv.sample_episode`` (train prompts, random pools of *seen*
models of random size and order, a random knob, perturbed descriptors); the env refuses unseen
models. Each episode's first-turn prompt text is the GRPO dataset's ``prompt``; the rollout finds
the episode again by that text (``EpisodeBank.fresh``). Validation episodes use val prompts and
unperturbed descriptors of seen models.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from routerl.data import Splits, load_outcomes
from routerl.data.embeddings import get_embedder
from routerl.data.synthetic import SyntheticWorld
from routerl.env import Episode, RoutingEnv
from routerl.policy.prompt import episode_prompt
from routerl.policy.router import EVIDENCE_FILE
from routerl.routers.cascade import JUDGE_FILE, fit_pooled_judge
from routerl.routers.learned_evidence import LEARNED_FILE, CrossFitLearnedRouter, fit_pooled_evidence, save_learned
from routerl.routers.probe_index import ProbeIndex
from routerl.routers.registry import RouterResources, build_router


def build_envs(config) -> list[RoutingEnv]:
    """One ``RoutingEnv`` per data source of ``config.data`` (a ``TrainConfig``); in shortlist mode
    each gets its evidence router, built from the table's probe rows only."""
    data, env_config = config.data, config.env.build()
    if data.synthetic is not None:
        s = data.synthetic
        world = SyntheticWorld(
            seed=s.seed, n_seen=s.n_seen, n_unseen=s.n_unseen, n_prompts=s.n_prompts,
            domains=tuple(s.domains), discrimination=s.discrimination, signal=s.signal,
        )  # fmt: skip
        table, splits, _ = world.build()
        envs = [RoutingEnv(table, splits, env_config)]
    else:
        splits = Splits.load(data.splits)
        envs = []
        for i, path in enumerate(data.tables):
            table = load_outcomes(path, responses=data.responses)
            if table.name not in splits.datasets:  # its models would all count as seen, unseen ones included
                raise ValueError(
                    f"config field 'data.tables[{i}]': dataset {table.name!r} ({path}) is not in {data.splits}, which "
                    f"names {', '.join(sorted(splits.datasets)) or 'no dataset'}: without its seen/unseen lists every "
                    "model would enter training pools"
                )
            envs.append(RoutingEnv(table, splits, env_config))
    if env_config.shortlist:
        ev = config.env.evidence
        if ev["router"] == "learned":  # one pooled, cross-fitted router shared by every env
            pooled = fit_pooled_evidence(
                [(env.table, env.splits) for env in envs], get_embedder(ev["embedder"]), seed=config.seed, **ev["options"]
            )
            for env in envs:
                env.evidence = pooled
            if config.env.answer_judge:  # its note ends every <info> block (training and serving)
                judge, _ = fit_pooled_judge([(env.table, env.splits) for env in envs], pooled, env_config.max_rounds, seed=config.seed)
                for env in envs:
                    env.judge = judge
        else:
            for env in envs:
                resources = RouterResources(env.table, env.splits, seed=config.seed, embedder=ev["embedder"])
                env.evidence = build_router(ev["router"], resources, **ev["options"])
    return envs


def save_evidence(envs: list[RoutingEnv], path: Path) -> None:
    """What a served policy needs to rebuild its evidence router without the outcome tables: the
    evidence routers' probe index (all envs merged) as ``path/evidence.npz``; for the ``learned``
    evidence, its regressor as ``path/learned.npz``; the answer judge, if any, as
    ``path/answer_judge.json``. No-op without shortlist."""
    routers = list({id(env.evidence): env.evidence for env in envs if env.evidence is not None}.values())
    if not routers:
        return
    path.mkdir(parents=True, exist_ok=True)
    ProbeIndex.merge([r.index for r in routers]).save(path / EVIDENCE_FILE)
    for router in routers:
        if isinstance(router, CrossFitLearnedRouter):
            save_learned(router.serving(), path / LEARNED_FILE)
    judges = [env.judge for env in envs if env.judge is not None]
    if judges:
        judges[0].save(path / JUDGE_FILE)


def fresh(episode: Episode) -> Episode:
    """An unplayed copy of ``episode`` (same prompt, pool, descriptors, knob and outcomes)."""
    return dataclasses.replace(episode, calls=[], actions=[], done=False)


def _pick_env(envs: list[RoutingEnv], rng: np.random.Generator) -> RoutingEnv:
    return envs[_pick_index(envs, rng)]


def _pick_index(envs: list[RoutingEnv], rng: np.random.Generator) -> int:
    """An environment's index, drawn in proportion to its train prompts."""
    if len(envs) == 1:
        return 0
    weights = np.array([env.table.prompts_in("train").size for env in envs], dtype=float)
    return int(rng.choice(len(envs), p=weights / weights.sum()))


@dataclass
class EpisodeBank:
    """Pre-sampled training episodes and their prompt texts (index-aligned); ``sources``: the
    index of the environment (dataset) each episode came from."""

    episodes: list[Episode]
    prompts: list[str]
    sources: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        # Identical prompt text means identical observation (query, pool descriptors, knob); the
        # first such episode stands for all of them.
        self._by_prompt: dict[str, int] = {}
        for i, p in enumerate(self.prompts):
            self._by_prompt.setdefault(p, i)

    @classmethod
    def sample(
        cls, envs: list[RoutingEnv], tokenizer, n: int, seed: int, max_query_chars: int = 1500, style: str = "verbose"
    ) -> "EpisodeBank":
        rng = np.random.default_rng(seed)
        episodes, sources = [], []
        for _ in range(n):
            k = _pick_index(envs, rng)
            sources.append(k)
            episodes.append(envs[k].sample_episode(rng))
        prompts = [episode_prompt(tokenizer, e.spec, max_query_chars=max_query_chars, style=style) for e in episodes]
        return cls(episodes, prompts, sources)

    def __len__(self) -> int:
        return len(self.episodes)

    def fresh(self, prompt: str) -> Episode:
        """An unplayed copy of the episode whose prompt text is ``prompt``."""
        try:
            return fresh(self.episodes[self._by_prompt[prompt]])
        except KeyError:
            raise KeyError(f"no training episode has this prompt: {prompt[-200:]!r}") from None


def validation_episodes(envs: list[RoutingEnv], n: int, seed: int) -> list[Episode]:
    """``n`` fixed episodes on val prompts over random pools of seen models (no descriptor noise)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        env = _pick_env(envs, rng)
        c = env.config
        val = env.table.prompts_in("val")
        ok = val[(env.table.available[val][:, env.seen]).sum(axis=1) >= c.min_pool]
        if ok.size == 0:
            raise ValueError(f"{env.table.name}: no val prompt has {c.min_pool} seen, priced models")
        prompt = int(rng.choice(ok))
        members = np.flatnonzero(env.table.available[prompt] & env.seen)
        size = int(rng.integers(min(c.min_pool, members.size), min(c.max_pool, members.size) + 1))
        pool = rng.permutation(members)[:size]
        out.append(env.episode(prompt, pool, float(rng.choice(c.knobs)), training=False))
    return out
