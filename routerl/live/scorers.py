"""Task-specific answer scorers: ``score(response_text, gold_answer) -> float in [0, 1]``.

Three scorers, chosen by the probe row's ``task`` (``scorer_for``), overridable by name:

* ``numeric`` (``gsm``, ``math-l5``): the first number of the model's answer against the gold
  answer's first number, as ZeroEval's math check does; ``$``, thousands commas and a trailing
  ``.0`` do not matter (``"$1,234.0"`` == ``1234``).
* ``choice`` (``mmlu_pro``): the option letter A-J, read from MMLU-Pro style patterns
  (``the answer is (X)``, ``Answer: X``, a lone letter).
* ``exact`` (``crux`` and any other task): the literal answer against the gold string, up to the
  quote characters around either (``'abc'`` == ``abc``). Whitespace inside the answer field
  counts, as in ZeroEval's check (``" {}"`` is wrong for ``{}``); this rule reproduces the
  recorded crux scores on 99.1% of rows, stripping whitespace too only on 98.2%.

"The model's answer" is the ``answer`` field when the response holds ZeroEval's JSON block
(``{"reasoning": ..., "answer": ...}``); otherwise a final-answer phrase (``the answer is X``,
``#### X``, ``\\boxed{X}``); otherwise the whole text (for ``numeric``: its last number).
"""

from __future__ import annotations

import json
import re
from typing import Callable

Scorer = Callable[[str, str], float]

_FENCE = re.compile(r"```(?:json)?\s*(\{.*?\})\s*```", re.DOTALL)
_ANSWER_QUOTED = re.compile(r'"answer"\s*:\s*"((?:[^"\\]|\\.)*)"', re.DOTALL)
_ANSWER_BARE = re.compile(r'"answer"\s*:\s*([^,}\n]+)')
_BOXED = re.compile(r"\\boxed\{((?:[^{}]|\{[^{}]*\})*)\}")
_ANSWER_IS = re.compile(r"answer is[:\s]*\$?([^\n]+?)\$?\s*(?:\.\s|\.$|$)", re.IGNORECASE | re.MULTILINE)
_HASHES = re.compile(r"####\s*([^\n]+)")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")

CHOICE_LETTERS = "ABCDEFGHIJ"
_CHOICE_PATTERNS = (  # (pattern, which match): MMLU-Pro's own order, then \\boxed{X}, then a lone letter
    (re.compile(r"answer is \(?([A-J])\)?"), 0),
    (re.compile(r"[aA]nswer:\s*\(?([A-J])\)?(?![A-Za-z])"), -1),
    (re.compile(r"\\boxed\{\s*(?:\\text\{)?\(?([A-J])\)?\}?\s*\}"), -1),
    (re.compile(r"^\s*\(?([A-J])\)?[.)]?\s*$"), 0),
)


def _json_answer(text: str) -> str | None:
    """The ``answer`` field of a ZeroEval-style JSON block, or None."""
    for block in _FENCE.findall(text):
        try:
            data = json.loads(block)
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict) and "answer" in data and data["answer"] is not None:
            return str(data["answer"])
    match = _ANSWER_QUOTED.search(text)
    if match:
        try:
            return json.loads(f'"{match.group(1)}"')
        except json.JSONDecodeError:
            return match.group(1)
    match = _ANSWER_BARE.search(text)
    if match:
        value = match.group(1).strip()
        return None if value == "null" else value
    return None


def extract_answer(text: str) -> str | None:
    """The model's final answer: the JSON ``answer`` field, else a final-answer phrase, else None."""
    if not isinstance(text, str) or not text.strip():
        return None
    answer = _json_answer(text)
    if answer is not None:
        return answer
    for pattern in (_BOXED, _HASHES, _ANSWER_IS):
        found = pattern.findall(text)
        if found:
            return found[-1].strip()
    return None


def _sanitize_number_text(text: str) -> str:
    return text.replace("$", "").replace(",", "").strip()


def first_number(text: str | None) -> float | None:
    """The first number in ``text`` (``$`` and thousands commas ignored), or None."""
    if text is None:
        return None
    match = _NUMBER.search(_sanitize_number_text(text))
    return float(match.group(0)) if match else None


def score_numeric(response: str, gold: str) -> float:
    """1.0 when the first number of the answer equals the gold answer's first number."""
    answer = extract_answer(response)
    if answer is None:
        numbers = _NUMBER.findall(_sanitize_number_text(response or ""))
        value = float(numbers[-1]) if numbers else None
    else:
        value = first_number(answer)
    target = first_number(str(gold))
    if target is None or value is None:
        if answer is None or target is not None:
            return 0.0
        return float(answer.strip() == str(gold).strip())
    return float(abs(value - target) < 1e-6 * max(1.0, abs(target)))


def extract_choice(text: str) -> str | None:
    """The option letter (A-J) a response chose, or None."""
    if not isinstance(text, str):
        return None
    answer = _json_answer(text)
    if answer is not None and re.fullmatch(r"\s*\(?([A-J])\)?\s*", answer):
        return answer.strip().strip("()")
    for pattern, which in _CHOICE_PATTERNS:
        found = pattern.findall(text)
        if found:
            return found[which]
    return None


def _gold_letter(gold: str) -> str:
    """The option letter of a ``choice`` gold answer (``"B"``, ``"(b)"``); ``ValueError`` otherwise."""
    letter = str(gold).strip().strip("()").upper()
    if letter not in CHOICE_LETTERS or len(letter) != 1:
        raise ValueError(f"field 'gold_answer': a choice answer must be one letter A-J, got {gold!r}")
    return letter


def score_choice(response: str, gold: str) -> float:
    """1.0 when the chosen option letter equals the gold letter."""
    gold_letter = _gold_letter(gold)
    return float(extract_choice(response) == gold_letter)


def _normalise(text: str) -> str:
    """Drop the quote characters (``'``, ``"``, backticks) around a literal; keep the rest as is."""
    return text.strip("'\"`")


def score_exact(response: str, gold: str) -> float:
    """1.0 when the answer equals the gold string literally, up to the quotes around either.

    Whitespace inside the answer field counts (``" {}"`` is not ``{}``), as in ZeroEval's check;
    a response without an answer field is compared whole, after stripping surrounding whitespace.
    """
    answer = extract_answer(response)
    if answer is None:
        answer = (response or "").strip()
    return float(answer == str(gold) or _normalise(answer) == _normalise(str(gold)))


SCORERS: dict[str, Scorer] = {"numeric": score_numeric, "choice": score_choice, "exact": score_exact}
TASK_SCORERS: dict[str, str] = {"gsm": "numeric", "math-l5": "numeric", "mmlu_pro": "choice", "crux": "exact"}
DEFAULT_SCORER = "exact"


def scorer_name_for(task: str, override: str | None = None) -> str:
    """The scorer name for ``task`` (``override`` wins); unknown tasks get ``exact``."""
    name = override or TASK_SCORERS.get(task, DEFAULT_SCORER)
    if name not in SCORERS:
        raise ValueError(f"unknown scorer {name!r}; expected one of {', '.join(SCORERS)}")
    return name


def check_gold(scorer: str, gold: str) -> None:
    """``ValueError`` (naming ``gold_answer``) when ``scorer`` cannot score against ``gold``: the
    check a probe set passes before any answer is paid for. Only ``choice`` constrains its gold
    (one letter A-J); ``numeric`` compares a gold without a number literally, ``exact`` takes any."""
    if scorer == "choice":
        _gold_letter(gold)


def scorer_for(task: str, override: str | None = None) -> Scorer:
    """The scorer function for ``task`` (see ``scorer_name_for``)."""
    return SCORERS[scorer_name_for(task, override)]
