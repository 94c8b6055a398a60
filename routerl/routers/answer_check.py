"""Judging an answer from its text and its peers': the accept signal of the ``cascade`` router.

After a call, a multi-round router must decide whether to accept the answer or pay for another
model. ``AnswerCheck`` estimates the probability that an answer is correct from

* the evidence router's estimate for the answering model on this query (known before the call),
* what the answer looks like: whether a final answer can be read from it (``extract_answer``), its
  length, and whether it hedges,
* whether it agrees with the final answers of the models already called, and how good those were
  expected to be.

Agreement is the strong signal. Two models that give the same final answer are usually right,
and two that disagree are often both wrong. The numbers are in docs/results.md.

The check is a logistic regression over ``CHECK_FEATURES``: a weight vector and a bias, evaluated
with numpy and saved as plain numbers. It reads only the query's estimates and answer texts, so it
judges an unseen model's answer the same way. ``fit_answer_check`` fits it on seen models' rows.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cached_property
from typing import Sequence

import numpy as np

CHECK_FEATURES = (
    "logit_estimate",  # logit of the evidence estimate for the answering model
    "no_answer",  # 1 when no final answer can be read from the text
    "log_chars",  # log(1 + characters) / 5
    "hedged",  # 1 when the text hedges ("not sure", "cannot determine", "I guess", ...)
    "has_peers",  # 1 when other models answered before
    "agrees_any",  # 1 when a peer gave the same final answer
    "agree_share",  # share of peers that gave the same final answer (0 without peers)
    "best_agreeing_logit",  # the highest logit estimate among agreeing peers (0 if none)
    "disagreed_best_logit",  # when every peer disagrees: their highest logit estimate, else 0
)

_JSON_ANSWER = re.compile(r'"answer"\s*:\s*"?((?:[^"\\\n]|\\.)*)"?')
_ANSWER_IS = re.compile(r"answer is\s*:?\s*((?:(?!answer is)[^\n])*)", re.IGNORECASE)
_LETTER = re.compile(r"^\(?([a-j])\)?(?=$|[\s.,:;)*])")
_NUMBER = re.compile(r"^[$\s]*(-?\d[\d,]*(?:\.\d+)?)")
_HEDGE = re.compile(
    r"\b(not (?:entirely |completely |fully )?(?:sure|certain|confident)|unsure|uncertain|unclear|i (?:think|guess|believe)"
    r"|cannot (?:be )?determined?|can't (?:be )?determined?|not possible to determine|might be|possibly|my best guess)\b",
    re.IGNORECASE,
)
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
MAX_ANSWER_CHARS = 200


def extract_answer(text: str | None) -> str | None:
    """The final answer a response states, normalised for comparison, or None.

    Where it is read from, first match wins: the last ``"answer": ...`` field (JSON answers), the
    last ``\\boxed{...}``, the text after the last "answer is". Normalised: a leading option letter
    ("(E).") -> ``"e"``; a leading number -> the number without thousands separators or trailing
    zeros ("1,200.50" -> ``"1200.5"``); otherwise the lower-cased text with spaces removed (at
    most ``MAX_ANSWER_CHARS``). A response without any of the three markers has no answer.
    """
    if not text:
        return None
    for pattern in (_JSON_ANSWER, _BOXED, _ANSWER_IS):
        found = pattern.findall(text)
        if found:
            return _normalise(found[-1])
    return None


def _normalise(raw: str) -> str | None:
    s = raw.strip().strip("*").strip().lower()
    letter = _LETTER.match(s)
    if letter:
        return letter.group(1)
    number = _NUMBER.match(s)
    if number:
        value = number.group(1).replace(",", "")
        if "." in value:
            value = value.rstrip("0").rstrip(".")
        return value or "0"
    s = re.sub(r"\s+", "", s).rstrip(".")
    return s[:MAX_ANSWER_CHARS] or None


def _logit(p: float) -> float:
    p = min(max(float(p), 0.02), 0.98)
    return float(np.log(p / (1.0 - p)))


@dataclass(frozen=True)
class Answer:
    """One model's answer to the query: its evidence ``estimate`` and its response ``text``."""

    estimate: float
    text: str

    @cached_property
    def final(self) -> str | None:
        return extract_answer(self.text)


def check_features(answer: Answer, peers: Sequence[Answer] = ()) -> np.ndarray:
    """``(F,)`` features (``CHECK_FEATURES``) of ``answer`` given the answers before it."""
    final = answer.final
    agreeing = [p for p in peers if final is not None and p.final == final]
    return np.array(
        [
            _logit(answer.estimate),
            float(final is None),
            np.log1p(len(answer.text)) / 5.0,
            float(_HEDGE.search(answer.text) is not None),
            float(bool(peers)),
            float(bool(agreeing)),
            len(agreeing) / len(peers) if peers else 0.0,
            max((_logit(p.estimate) for p in agreeing), default=0.0),
            max((_logit(p.estimate) for p in peers), default=0.0) if peers and not agreeing else 0.0,
        ]
    )


@dataclass(frozen=True)
class AnswerCheck:
    """``P(correct) = sigmoid(weights . features + bias)``; ``weights`` has ``len(CHECK_FEATURES)``."""

    weights: tuple[float, ...]
    bias: float

    def __post_init__(self) -> None:
        if len(self.weights) != len(CHECK_FEATURES):
            raise ValueError(f"an answer check needs {len(CHECK_FEATURES)} weights, got {len(self.weights)}")

    def prob(self, answer: Answer, peers: Sequence[Answer] = ()) -> float:
        z = float(np.dot(self.weights, check_features(answer, peers)) + self.bias)
        return float(1.0 / (1.0 + np.exp(-z)))

    def to_dict(self) -> dict:
        return {"features": list(CHECK_FEATURES), "weights": list(self.weights), "bias": self.bias}

    @classmethod
    def from_dict(cls, data: dict) -> "AnswerCheck":
        if list(data.get("features", [])) != list(CHECK_FEATURES):
            raise ValueError(f"answer check features {data.get('features')} differ from {list(CHECK_FEATURES)}")
        return cls(tuple(float(w) for w in data["weights"]), float(data["bias"]))

    def dumps(self) -> str:
        return json.dumps(self.to_dict())


def fit_answer_check(x: np.ndarray, correct: np.ndarray, c: float = 1.0) -> AnswerCheck:
    """Logistic regression of ``correct`` ``(n,)`` on ``check_features`` rows ``x`` ``(n, F)``."""
    from sklearn.linear_model import LogisticRegression

    x = np.asarray(x, dtype=float)
    correct = np.asarray(correct, dtype=bool)
    if x.ndim != 2 or x.shape[1] != len(CHECK_FEATURES) or len(x) != len(correct):
        raise ValueError(f"answer-check rows must be (n, {len(CHECK_FEATURES)}) with n labels, got {x.shape} and {correct.shape}")
    if correct.all() or not correct.any():
        raise ValueError("answer-check rows need both correct and wrong answers")
    model = LogisticRegression(C=c, max_iter=1000).fit(x, correct)
    return AnswerCheck(tuple(float(w) for w in model.coef_[0]), float(model.intercept_[0]))
