"""The routing environment: builds episodes from an outcome table.

Training episodes (``sample_episode``) draw a prompt from the train split, a pool that is a random
subset of the *seen* models with a priced row for it (size in ``[min_pool, max_pool]``, random
order), a knob from ``knobs``, and perturb descriptor numbers slightly so a policy must read them
rather than memorise models. Unseen models can never enter a training episode: ``episode()`` with
``training=True`` raises ``UnseenModelError`` if asked to.

Evaluation episodes (``episode(..., training=False)``) take any pool the caller names.

Shortlist mode (``EnvConfig.shortlist = S > 0``, with an ``evidence`` router set on the env): the
episode's candidates are the S best of the pool by the evidence router's per-query estimate minus
knob x estimated cost (``routerl.routers.shortlist``), shown with those estimates, in the order
``shortlist_order``: ``value`` (best first, as served), ``cost`` (cheapest first) or ``random``
(random in training episodes, cheapest first in others).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from routerl.data.outcomes import OutcomeTable
from routerl.data.splits import Splits
from routerl.descriptors.build import build_descriptors
from routerl.descriptors.model import ModelDescriptor
from routerl.env.episode import Episode, EpisodeSpec
from routerl.routers.base import Query
from routerl.routers.shortlist import check_order, display_order, shortlist_for


class UnseenModelError(RuntimeError):
    """An unseen model was about to enter a training episode."""


@dataclass
class EnvConfig:
    """Episode sampling.

    Attributes:
        min_pool, max_pool: pool size range for training episodes (clipped to what is available).
        max_rounds: calls allowed per episode (1 = single call).
        knobs: cost knobs sampled uniformly for training episodes.
        price_jitter: training-time multiplicative noise on prices (log-normal sigma).
        score_jitter: training-time additive noise on sample scores (normal sigma, clipped to [0, 1]).
        max_info_chars: characters of a response shown in ``<info>``.
        shortlist: 0, or show only this many candidates, chosen and annotated by the env's
            ``evidence`` router (see the module docstring).
        shortlist_order: display order of the shortlist: value, cost or random (see the module docstring).
    """

    min_pool: int = 2
    max_pool: int = 6
    max_rounds: int = 2
    knobs: tuple[float, ...] = (0.0, 0.03, 0.1, 0.3, 1.0)
    price_jitter: float = 0.1
    score_jitter: float = 0.03
    max_info_chars: int = 600
    shortlist: int = 0
    shortlist_order: str = "random"

    def __post_init__(self) -> None:
        check_order(self.shortlist_order)
        if self.shortlist < 0:
            raise ValueError(f"field 'shortlist' must be >= 0, got {self.shortlist}")
        if self.min_pool < 1:
            raise ValueError(f"field 'min_pool' must be >= 1, got {self.min_pool}")
        if self.max_pool < self.min_pool:
            raise ValueError(f"field 'max_pool' must be >= min_pool ({self.min_pool}), got {self.max_pool}")
        if self.max_rounds < 1:
            raise ValueError(f"field 'max_rounds' must be >= 1, got {self.max_rounds}")
        if not self.knobs or any((not math.isfinite(k)) or k < 0 for k in self.knobs):
            raise ValueError(f"field 'knobs' must be a non-empty list of finite values >= 0, got {self.knobs}")
        for name in ("price_jitter", "score_jitter"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"field '{name}' must be >= 0, got {value}")
        if self.max_info_chars < 16:
            raise ValueError(f"field 'max_info_chars' must be >= 16, got {self.max_info_chars}")


@dataclass
class RoutingEnv:
    table: OutcomeTable
    splits: Splits | None = None
    config: EnvConfig = field(default_factory=EnvConfig)
    evidence: object | None = None  # a ScoreRouter (``predict``) for shortlist mode
    judge: object | None = None  # an AnswerJudge whose note ends each <info> block (shortlist mode)

    def __post_init__(self) -> None:
        self.descriptors: dict[str, ModelDescriptor] = build_descriptors(self.table)
        self.seen = self.table.seen_mask(self.splits) & self.table.priced
        self.unseen = self.table.unseen_mask(self.splits)
        train = self.table.prompts_in("train")
        # Train prompts where a training pool of at least min_pool seen models exists.
        counts = self.table.available[train][:, self.seen].sum(axis=1)
        self._train_prompts = train[counts >= max(self.config.min_pool, 1)]
        if self._train_prompts.size == 0:
            raise ValueError(f"{self.table.name}: no train prompt has {self.config.min_pool} seen, priced models")

    def query(self, prompt: int) -> Query:
        t = self.table
        tokens = t.prompt_tokens[prompt]
        tokens = tokens[np.isfinite(tokens)]
        return Query(
            text=t.prompt_text[prompt],
            domain=t.domain[prompt],
            prompt_tokens=float(np.median(tokens)) if tokens.size else None,
            prompt_id=t.prompt_ids[prompt],
        )

    def _perturb(self, desc: ModelDescriptor, rng: np.random.Generator) -> ModelDescriptor:
        c = self.config
        price = float(np.exp(rng.normal(0.0, c.price_jitter))) if c.price_jitter else 1.0
        scores = {
            d: float(np.clip(round(s + rng.normal(0.0, c.score_jitter), 4), 0.0, 1.0)) for d, s in desc.sample_scores.items()
        }
        return desc.with_changes(
            input_price_per_mtok=round(desc.input_price_per_mtok * price, 6),
            output_price_per_mtok=round(desc.output_price_per_mtok * price, 6),
            sample_scores=scores,
        )

    def episode(
        self,
        prompt: int,
        pool: Sequence[int],
        knob: float,
        *,
        training: bool,
        max_rounds: int | None = None,
        rng: np.random.Generator | None = None,
    ) -> Episode:
        """An episode on ``prompt`` over ``pool`` (table model indices, in candidate order)."""
        t = self.table
        pool = tuple(int(j) for j in pool)
        if not pool:
            raise ValueError("field 'pool' must not be empty")
        missing = [t.models[j] for j in pool if not t.available[prompt, j]]
        if missing:
            raise ValueError(f"models without a priced row for {t.prompt_ids[prompt]}: {missing}")
        if training:
            leaked = [t.models[j] for j in pool if not self.seen[j]]
            if leaked:
                raise UnseenModelError(f"unseen or unpriced models may never enter a training episode: {leaked}")
            if t.split[prompt] != "train":
                raise UnseenModelError(f"training episodes use train prompts only; {t.prompt_ids[prompt]} is {t.split[prompt]}")
        descs = [self.descriptors[t.models[j]] for j in pool]
        if training and rng is not None:
            descs = [self._perturb(d, rng) for d in descs]
        query = self.query(prompt)
        evidence = None
        if self.config.shortlist:
            if self.evidence is None:
                raise ValueError("shortlist mode needs an evidence router on the env (RoutingEnv.evidence)")
            order = display_order(self.config.shortlist_order, training and rng is not None)
            short = shortlist_for(
                self.evidence, query, descs, float(knob), self.config.shortlist,
                order=order, rng=rng if order == "random" else None,
            )  # fmt: skip
            pool = tuple(pool[p] for p in short.positions)
            descs = short.candidates(descs)
            evidence = short.estimates
        spec = EpisodeSpec(
            prompt=prompt,
            query=query,
            pool=pool,
            descriptors=tuple(descs),
            knob=float(knob),
            max_rounds=max_rounds or self.config.max_rounds,
            evidence=evidence,
        )
        return Episode(
            spec=spec,
            scores=tuple(float(t.score[prompt, j]) for j in pool),
            costs=tuple(float(t.cost[prompt, j]) for j in pool),
            responses=tuple(t.response(prompt, j) or "" for j in pool),
            max_info_chars=self.config.max_info_chars,
            judge=self.judge if evidence is not None else None,
        )

    def sample_episode(self, rng: np.random.Generator) -> Episode:
        """A randomised training episode (see the module docstring)."""
        c = self.config
        prompt = int(rng.choice(self._train_prompts))
        members = np.flatnonzero(self.table.available[prompt] & self.seen)
        size = int(rng.integers(min(c.min_pool, members.size), min(c.max_pool, members.size) + 1))
        pool = rng.permutation(members)[:size]
        knob = float(rng.choice(c.knobs))
        return self.episode(prompt, pool, knob, training=True, rng=rng)
