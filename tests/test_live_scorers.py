"""Scorers: unit cases per scorer, task -> scorer choice, and agreement with the recorded scores."""

from __future__ import annotations

import pytest

from routerl.live.scorers import (
    check_gold,
    extract_answer,
    extract_choice,
    first_number,
    score_choice,
    score_exact,
    score_numeric,
    scorer_for,
    scorer_name_for,
)
from routerl.live.replay import load_responses
from tests.conftest import shared_file


def zeroeval(answer: str, reasoning: str = "some steps") -> str:
    """A response in ZeroEval's output format."""
    return f'Let me think.\n\n```json\n{{\n    "reasoning": "{reasoning}",\n    "answer": "{answer}"\n}}\n```\nDone.'


# -- numeric ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "answer, gold, expected",
    [
        ("18", "18", 1.0),
        ("$18", "18", 1.0),
        ("$1,234", "1234", 1.0),
        ("1234.0", "1234", 1.0),
        ("18.00 dollars", "18", 1.0),
        ("-15", "-15", 1.0),
        ("15", "-15", 0.0),
        ("19", "18", 0.0),
        ("3/2", "3", 1.0),  # ZeroEval's first-number rule: "3/2" reads as 3
        ("The answer is 7 apples", "7", 1.0),
        ("", "7", 0.0),
    ],
)
def test_numeric_compares_first_number(answer, gold, expected):
    assert score_numeric(zeroeval(answer), gold) == expected


def test_numeric_without_json_uses_final_answer_phrases():
    assert score_numeric("Work...\n#### 42", "42") == 1.0
    assert score_numeric("So the total is \\boxed{1,024}.", "1024") == 1.0
    assert score_numeric("We add 2 and 3 to get 5 in the end 5", "5") == 1.0  # last number
    assert score_numeric("no digits here", "5") == 0.0


def test_numeric_non_numeric_gold_compares_text():
    assert score_numeric(zeroeval("\\\\pi"), "\\pi") == 1.0
    assert score_numeric(zeroeval("e"), "\\pi") == 0.0


def test_first_number_handles_signs_dollars_commas():
    assert first_number("$-1,000.50 total") == -1000.5
    assert first_number("none") is None
    assert first_number(None) is None


# -- choice -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "response, letter",
    [
        ("Let's think step by step. ... The answer is (C).", "C"),
        ("The answer is J", "J"),
        ("reasoning\nAnswer: B", "B"),
        ("Answer: (H)", "H"),
        ("Thus \\boxed{E}", "E"),
        ("D", "D"),
        ("(A)", "A"),
        ('```json\n{"answer": "G"}\n```', "G"),
        ("The answer is (A).\n\nQuestion: next...\nThe answer is (B).", "A"),  # the first, as MMLU-Pro
        ("I cannot decide.", None),
    ],
)
def test_choice_extraction(response, letter):
    assert extract_choice(response) == letter


def test_choice_score_and_gold_validation():
    assert score_choice("The answer is (C).", "C") == 1.0
    assert score_choice("The answer is (C).", "(c)") == 1.0
    assert score_choice("The answer is (C).", "D") == 0.0
    with pytest.raises(ValueError, match="gold_answer"):
        score_choice("The answer is (C).", "K")



@pytest.mark.parametrize("gold", ["C", "(c)", " j ", "A)"])
def test_check_gold_accepts_a_choice_letter(gold):
    check_gold("choice", gold)  # no error: score_choice can score against it
    assert score_choice(f"The answer is ({gold.strip().strip('()').upper()}).", gold) == 1.0


@pytest.mark.parametrize("gold", ["K", "AB", "", "()", "1", "42", "(A) Paris"])
def test_check_gold_refuses_a_choice_gold_that_is_not_one_letter(gold):
    """The check a probe set passes before anything is paid for: the same rule as score_choice."""
    with pytest.raises(ValueError, match=r"field 'gold_answer': a choice answer must be one letter A-J, got"):
        check_gold("choice", gold)
    with pytest.raises(ValueError, match="gold_answer"):
        score_choice("The answer is (A).", gold)


def test_check_gold_leaves_numeric_and_exact_golds_alone():
    for scorer in ("numeric", "exact"):
        for gold in ("18", "\\pi", "[1, 2]", "K", "'abc'"):
            check_gold(scorer, gold)  # numeric compares a gold without a number literally; exact takes any

# -- exact ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "answer, gold, expected",
    [
        ("[1, 2, 3]", "[1, 2, 3]", 1.0),
        ("'abc'", "'abc'", 1.0),
        ("abc", "'abc'", 1.0),  # quotes around either do not matter
        ('\\"UA6HAJQ\\"', "'UA6HAJQ'", 1.0),  # escaped double quotes in the JSON answer
        (" {}", "{}", 0.0),  # whitespace inside the answer counts, as in ZeroEval
        ("[1, 2]", "[1, 2, 3]", 0.0),
        ('{"a": 1}', "{'a': 1}", 0.0),  # a different literal
    ],
)
def test_exact_literal_match(answer, gold, expected):
    assert score_exact(zeroeval(answer), gold) == expected


def test_exact_without_json_compares_whole_stripped_text():
    assert score_exact("  `[1, 2]`\n", "[1, 2]") == 1.0
    assert score_exact("It returns [1, 2]", "[1, 2]") == 0.0


def test_extract_answer_prefers_json_field():
    assert extract_answer(zeroeval("42", reasoning="first 7 then 9")) == "42"
    assert extract_answer('{"reasoning": "x", "answer": 12}') == "12"
    assert extract_answer("nothing to see") is None
    assert extract_answer("") is None


# -- choice of scorer -------------------------------------------------------------------------
def test_scorer_by_task_and_override():
    assert scorer_name_for("gsm") == "numeric"
    assert scorer_name_for("math-l5") == "numeric"
    assert scorer_name_for("mmlu_pro") == "choice"
    assert scorer_name_for("crux") == "exact"
    assert scorer_name_for("unknown-task") == "exact"
    assert scorer_name_for("crux", "numeric") == "numeric"
    assert scorer_for("gsm") is score_numeric
    with pytest.raises(ValueError, match="unknown scorer 'fuzzy'"):
        scorer_name_for("gsm", "fuzzy")


# -- agreement with the recorded scores -------------------------------------------------------
@pytest.mark.shared_data
def test_scorers_reproduce_recorded_scores_on_unseen_model_probe_rows(zeroeval_table):
    """Over every probe row of an unseen model, the scorers give the recorded score on all but a
    handful (ZeroEval's own check has quirks, e.g. a malformed literal it counted right)."""
    model = "claude-3-5-haiku-20241022"
    responses = load_responses(shared_file("zeroeval_responses.jsonl.gz"), [model])
    j = zeroeval_table.model_index(model)
    agree = total = 0
    for i in zeroeval_table.prompts_in("probe"):
        text = responses.get((zeroeval_table.prompt_ids[i], model))
        if text is None or not zeroeval_table.available[i, j]:
            continue
        score = scorer_for(zeroeval_table.task[i])(text, zeroeval_table.gold[i])
        agree += score == float(zeroeval_table.score[i, j])
        total += 1
    assert total == 269
    assert agree >= 267, f"{total - agree} of {total} probe rows scored differently from the record"
