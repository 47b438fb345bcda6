"""Agreement between answers: exact keys for structured answers, similarity clusters for free text."""

from __future__ import annotations

import pytest

from domain.consensus import EXACT, TEXT, decide, jaccard, majority_probability, structured_key


@pytest.mark.parametrize(("a", "b"), [
    ("42", "42.0"), ("1,000", "1000"), (" 3.50 ", "3.5"), ("1e3", "1000"), ("-0", "0"), ("42.", "42"),
    ('{"b": 1, "a": [1, 2]}', '{"a":[1,2],"b":1}'), ("```json\n{\"a\": 1}\n```", '{"a": 1}'),
    ("Yes", "yes."), ("Paris!", "paris"), ("O(n log n)", "o(n log n)"),
])
def test_structured_answers_that_mean_the_same_have_the_same_key(a, b):
    assert structured_key(a) == structured_key(b) is not None


@pytest.mark.parametrize(("a", "b"), [("42", "41"), ('{"a": 1}', '{"a": 2}'), ("yes", "no"), ("42", "42 apples")])
def test_different_structured_answers_have_different_keys(a, b):
    assert structured_key(a) != structured_key(b)


def test_long_answers_are_free_text():
    assert structured_key("The sky is blue because air scatters light.") is None


def test_a_strict_majority_of_exact_answers_wins_with_its_share_as_score():
    verdict = decide(["42", "41", "42.0"])
    assert (verdict.mode, verdict.sizes, verdict.winner, verdict.decided, verdict.tie) == (EXACT, [2, 1], 0, True, False)
    assert verdict.score == pytest.approx(2 / 3)


def test_an_even_split_is_a_tie_and_undecided():
    verdict = decide(["7", "8"])
    assert (verdict.decided, verdict.tie, verdict.sizes) == (False, True, [1, 1])


def test_a_plurality_is_not_a_majority():
    verdict = decide(["a", "a", "b", "c", "d"])
    assert (verdict.sizes, verdict.decided, verdict.tie) == ([2, 1, 1, 1], False, False)


def test_free_text_clusters_by_shared_words():
    answers = ["The sky is blue because air scatters short blue wavelengths of sunlight.",
               "Because the ocean reflects onto it, said my uncle.",
               "The sky is blue because air molecules scatter short blue wavelengths of sunlight."]
    verdict = decide(answers)
    assert (verdict.mode, verdict.clusters, verdict.decided) == (TEXT, ((0, 2), (1,)), True)
    assert 0.6 <= verdict.cohesion < 1


def test_the_threshold_decides_what_counts_as_the_same_text():
    a, b = "the cat sat on the mat today", "the cat sat on a red mat"
    assert jaccard(a, b) == pytest.approx(5 / 8)
    assert decide([a, b], threshold=0.6).sizes == [2]
    assert decide([a, b], threshold=0.7).sizes == [1, 1]


def test_mixing_a_label_with_text_falls_back_to_text_similarity():
    assert decide(["Paris", "The capital of France is Paris, of course."]).mode == TEXT


def test_the_winner_of_a_text_cluster_is_its_most_central_answer():
    words = "alpha beta gamma delta epsilon zeta eta theta".split()
    answers = [" ".join(words[:6]), " ".join(words[:7]), " ".join(words)]  # the middle one shares most with both
    assert decide(answers, threshold=0.5).winner == 1


def test_a_vote_needs_answers():
    with pytest.raises(ValueError):
        decide([])


@pytest.mark.parametrize(("k", "p", "expected"), [(1, 0.7, 0.7), (3, 0.7, 0.784), (2, 0.5, 0.25), (5, 0.9, 0.99144)])
def test_the_binomial_majority_rule(k, p, expected):
    assert majority_probability(k, p) == pytest.approx(expected)
