"""A seeded synthetic routing world for tests and for running without data.

Models have a latent skill per domain, a price that grows with their mean skill, a latency and a
verbosity; prompts have a domain and a difficulty. Outcomes follow a two-parameter item-response
model::

    P(correct | model m, prompt p) = sigmoid(discrimination * (skill[m, domain[p]] - difficulty[p]))

Responses carry an honest but noisy accept signal: a correct answer says it is confident with
probability ``signal``, a wrong one with probability ``1 - signal``. So a multi-round router can
learn to accept or escalate after reading an answer, as on real data.

Any number of never-seen models can be minted from the same prior (``mint_models``); that is how
tests check generalisation to unseen models cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from routerl.data.outcomes import OutcomeTable, ResponseStore
from routerl.data.splits import DatasetModels, Splits

DOMAIN_WORDS = {
    "math": ["integer", "sum", "equation", "prime", "fraction", "triangle", "solve", "digits"],
    "code": ["function", "list", "loop", "python", "return", "string", "index", "assert"],
    "law": ["contract", "court", "statute", "liability", "plaintiff", "tort", "appeal", "clause"],
    "biology": ["cell", "protein", "gene", "enzyme", "species", "membrane", "dna", "tissue"],
    "history": ["empire", "treaty", "revolution", "dynasty", "war", "colony", "king", "century"],
    "physics": ["force", "energy", "velocity", "charge", "field", "mass", "wave", "momentum"],
}


@dataclass
class SyntheticModel:
    id: str
    skill: dict[str, float]
    input_price: float
    output_price: float
    latency_ms: float
    verbosity: float


@dataclass
class SyntheticWorld:
    """Generator of models, prompts and outcomes. ``build()`` returns (table, splits)."""

    seed: int = 0
    n_seen: int = 8
    n_unseen: int = 3
    n_prompts: int = 600
    domains: tuple[str, ...] = ("math", "code", "law", "biology")
    discrimination: float = 2.0
    signal: float = 0.8
    name: str = "synthetic"
    _rng: np.random.Generator = field(init=False, repr=False)
    _minted: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        unknown = [d for d in self.domains if d not in DOMAIN_WORDS]
        if unknown:
            raise ValueError(f"field 'domains': unknown synthetic domains {unknown}; choose from {sorted(DOMAIN_WORDS)}")
        self._rng = np.random.default_rng(self.seed)

    def mint_models(self, n: int, prefix: str = "syn") -> list[SyntheticModel]:
        """Draw ``n`` new models from the world's prior (ids never repeat within a world)."""
        rng = self._rng
        out = []
        for _ in range(n):
            general = rng.normal(0.0, 1.0)
            skill = {d: float(general + rng.normal(0.0, 0.8)) for d in self.domains}
            mean = float(np.mean(list(skill.values())))
            # Price grows steeply with skill (x ~20 per 2 sd), with provider noise.
            in_price = float(np.round(0.5 * np.exp(1.5 * mean + rng.normal(0.0, 0.3)), 4))
            out.append(
                SyntheticModel(
                    id=f"{prefix}-{self._minted:03d}",
                    skill=skill,
                    input_price=max(in_price, 0.01),
                    output_price=max(round(in_price * float(rng.uniform(2.0, 4.0)), 4), 0.02),
                    latency_ms=float(np.round(200 + 400 * np.exp(0.5 * mean) * rng.uniform(0.7, 1.3))),
                    verbosity=float(rng.uniform(0.6, 1.6)),
                )
            )
            self._minted += 1
        return out

    def _prompts(self):
        rng = self._rng
        domains = rng.choice(len(self.domains), size=self.n_prompts)
        difficulty = rng.normal(0.0, 1.2, size=self.n_prompts)
        texts, tokens = [], []
        for i, (d, b) in enumerate(zip(domains, difficulty)):
            words = DOMAIN_WORDS[self.domains[d]]
            picked = rng.choice(words, size=5, replace=True)
            level = "hard" if b > 0.8 else "easy" if b < -0.8 else "medium"
            texts.append(f"Question {i} ({level}, {self.domains[d]}): " + " ".join(picked) + "?")
            tokens.append(int(rng.integers(40, 300)))
        return domains, difficulty, texts, np.asarray(tokens, dtype=np.float32)

    def build(self) -> tuple[OutcomeTable, Splits, list[SyntheticModel]]:
        """Draw models and prompts, sample every outcome, and return the table, the splits (the
        first ``n_seen`` models seen, the rest unseen) and the latent models."""
        rng = self._rng
        models = self.mint_models(self.n_seen + self.n_unseen)
        domains, difficulty, texts, p_tokens = self._prompts()
        P, M = self.n_prompts, len(models)
        skill = np.array([[m.skill[d] for d in self.domains] for m in models])  # (M, D)
        logits = self.discrimination * (skill[:, domains].T - difficulty[:, None])  # (P, M)
        prob = 1.0 / (1.0 + np.exp(-logits))
        score = (rng.random((P, M)) < prob).astype(np.float32)
        verbosity = np.array([m.verbosity for m in models])
        r_tokens = np.round(
            (80 + 120 * np.maximum(difficulty, -1.0)[:, None] + 60) * verbosity[None, :] * rng.uniform(0.8, 1.2, (P, M))
        ).clip(10, None).astype(np.float32)
        prompt_tokens = np.repeat(p_tokens[:, None], M, axis=1)
        in_price = np.array([m.input_price for m in models])
        out_price = np.array([m.output_price for m in models])
        cost = (prompt_tokens * in_price[None, :] + r_tokens * out_price[None, :]) / 1e6
        prompt_ids = [f"{self.name}/{i}" for i in range(P)]
        gold = [str(int(rng.integers(0, 100))) for _ in range(P)]

        confident = np.where(score > 0.5, rng.random((P, M)) < self.signal, rng.random((P, M)) >= self.signal)
        texts_by_key = {}
        for i in range(P):
            for j, m in enumerate(models):
                answer = gold[i] if score[i, j] > 0.5 else str((int(gold[i]) + 1 + j) % 100)
                tone = "I am confident in this." if confident[i, j] else "I am not sure about this."
                texts_by_key[(prompt_ids[i], m.id)] = f"Working through it step by step. {tone} The answer is {answer}."
        table = OutcomeTable(
            name=self.name,
            prompt_ids=prompt_ids,
            prompt_text=texts,
            domain=[self.domains[d] for d in domains],
            task=[self.domains[d] for d in domains],
            gold=gold,
            models=[m.id for m in models],
            score=score,
            cost=cost.astype(np.float64),
            prompt_tokens=prompt_tokens,
            response_tokens=r_tokens,
            input_price=in_price,
            output_price=out_price,
            responses=ResponseStore.from_dict(texts_by_key),
            source=f"synthetic(seed={self.seed})",
        )
        splits = Splits(
            datasets={self.name: DatasetModels(seen=[m.id for m in models[: self.n_seen]], unseen=[m.id for m in models[self.n_seen :]])}
        )
        return table, splits, models
