"""Consensus accuracy against the binomial majority-vote formula, through the real agreement code (JSON).

Voters of known, independent accuracy p answer synthetic questions; every vote is decided by
`domain.consensus.decide`, the function the orchestrator uses. A vote counts as right when it is decided
(strict majority) and its winner is the right answer: exactly the event the formula
    P(k, p) = sum_{i > k/2} C(k, i) p^i (1 - p)^(k - i)
describes. Reported per (k, p): measured, formula, difference, its standard error.

Then where the measure departs from the formula (each a named scenario):
- correlated errors: wrong voters share one wrong answer (a common misconception), so errors can win;
- near-duplicate text: a wrong answer that differs from the right one by a single number clusters with it;
- paraphrases: right answers in different words fail to cluster, so a right majority goes undecided;
- ties for even k: a split is undecided, so even k is no better than k - 1;
- escalation (the orchestrator's policy): one more voter when undecided; the winner is then used even
  if still undecided (flagged), so accuracy exceeds the strict-majority formula.

`--real BASE_URL --models a,b,c` runs the same harness against real deployments through the NexusAI
gateway (needs `NEXUS_API_KEY`; off by default): arithmetic questions, each model's measured accuracy,
and the consensus accuracy compared with the Poisson-binomial prediction from those accuracies.

    python -m ops.bench.consensus [--trials 4000] [--seed 7] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from domain.consensus import decide, majority_probability, structured_key  # noqa: E402

KS = (1, 3, 5, 7, 9)
PS = (0.6, 0.7, 0.8, 0.9)


@dataclass(frozen=True)
class Question:
    prompt: str
    right: str


Voter = Callable[[Question], str]
"""A voter answers a question; simulated or a real model through the gateway, the harness does not care."""


def simulated(p: float, rng: random.Random, wrong: Callable[[Question, random.Random], str]) -> Voter:
    def answer(q: Question) -> str:
        return q.right if rng.random() < p else wrong(q, rng)
    return answer


def scattered_wrong(q: Question, rng: random.Random) -> str:
    """An independent error: a wrong number from a large space, so two errors almost never agree."""
    value = int(q.right)
    while (guess := rng.randrange(1, 1_000_000)) == value:
        pass
    return str(guess)


def shared_wrong(q: Question, rng: random.Random) -> str:
    """A correlated error: every wrong voter gives the same wrong answer (an off-by-one everyone makes)."""
    return str(int(q.right) + 1)


def arithmetic(rng: random.Random) -> Question:
    a, b = rng.randrange(12, 99), rng.randrange(12, 99)
    return Question(f"What is {a} * {b}? Reply with the number only.", str(a * b))


def vote(voters: Sequence[Voter], q: Question, *, escalate: Voter | None = None,
         is_right: Callable[[str], bool] | None = None) -> tuple[bool, bool]:
    """(right, decided) for one question: the real decide() over the voters' answers."""
    answers = [v(q) for v in voters]
    verdict = decide(answers)
    if not verdict.decided and escalate is not None:
        answers.append(escalate(q))
        verdict = decide(answers)
        right = (is_right or (lambda a: a == q.right))(answers[verdict.winner])
        return right, verdict.decided
    right = verdict.decided and (is_right or (lambda a: a == q.right))(answers[verdict.winner])
    return right, verdict.decided


def cell(k: int, p: float, trials: int, rng: random.Random, wrong=scattered_wrong, escalate: bool = False,
         question: Callable[[random.Random], Question] = arithmetic) -> dict[str, Any]:
    voters = [simulated(p, rng, wrong) for _ in range(k)]
    extra = simulated(p, rng, wrong) if escalate else None
    right = decided = 0
    for _ in range(trials):
        r, d = vote(voters, question(rng), escalate=extra)
        right += r
        decided += d
    measured = right / trials
    formula = majority_probability(k, p)
    se = math.sqrt(max(formula * (1 - formula), 1e-12) / trials)
    return {"k": k, "p": p, "trials": trials, "measured": round(measured, 4), "formula": round(formula, 4),
            "difference": round(measured - formula, 4), "stderr": round(se, 4),
            "within_3_stderr": abs(measured - formula) <= 3 * se + 1e-9, "decided_rate": round(decided / trials, 4)}


# --- free-text scenarios --------------------------------------------------------------------------

def near_duplicate(rng: random.Random) -> Question:
    n = rng.randrange(100, 999)
    return Question("", f"The total comes to {n} units after adding both invoices together")


def near_duplicate_wrong(q: Question, rng: random.Random) -> str:
    n = int(q.right.split()[4])
    return q.right.replace(str(n), str(n + rng.choice((-10, 10))))


PARAPHRASES = ["The capital of France is Paris, a city on the Seine.",
               "Paris is France's capital.",
               "France's seat of government is the city of Paris.",
               "It is Paris, the largest French city and the national capital."]


def paraphrase_cell(k: int, p: float, trials: int, rng: random.Random) -> dict[str, Any]:
    """Right answers in different words (one paraphrase per right voter) against scattered wrong text."""
    right = decided = 0
    for _ in range(trials):
        answers = [rng.choice(PARAPHRASES) if rng.random() < p
                   else f"I believe the answer is {rng.choice(['Lyon', 'Marseille', 'Nice', 'Lille'])} {rng.random()}"
                   for _ in range(k)]
        verdict = decide(answers)
        decided += verdict.decided
        right += verdict.decided and "Paris" in answers[verdict.winner]
    formula = majority_probability(k, p)
    return {"k": k, "p": p, "measured": round(right / trials, 4), "formula": round(formula, 4),
            "difference": round(right / trials - formula, 4), "decided_rate": round(decided / trials, 4)}


def correlated_cell(k: int, p: float, rho: float, trials: int, rng: random.Random) -> dict[str, Any]:
    """Each voter still right with probability p, but with probability rho per question all voters share one
    outcome (a question every model gets wrong the same way), giving the same wrong answer."""
    right = decided = confidently_wrong = 0
    for _ in range(trials):
        q = arithmetic(rng)
        if rng.random() < rho:
            answers = [q.right if rng.random() < p else shared_wrong(q, rng)] * k
        else:
            answers = [q.right if rng.random() < p else scattered_wrong(q, rng) for _ in range(k)]
        verdict = decide(answers)
        ok = verdict.decided and answers[verdict.winner] == q.right
        right += ok
        decided += verdict.decided
        confidently_wrong += verdict.decided and not ok
    formula = majority_probability(k, p)
    return {"k": k, "p": p, "rho": rho, "measured": round(right / trials, 4), "formula": round(formula, 4),
            "difference": round(right / trials - formula, 4), "decided_rate": round(decided / trials, 4),
            "decided_wrong_rate": round(confidently_wrong / trials, 4)}


def near_duplicate_cell(k: int, p: float, trials: int, rng: random.Random) -> dict[str, Any]:
    """Right and wrong sentences that differ in one number: Jaccard sees them as the same answer."""
    voters = [simulated(p, rng, near_duplicate_wrong) for _ in range(k)]
    right = decided = merged = 0
    for _ in range(trials):
        q = near_duplicate(rng)
        answers = [v(q) for v in voters]
        verdict = decide(answers)
        winners = [answers[i] for i in verdict.clusters[0]]
        right += verdict.decided and answers[verdict.winner] == q.right
        decided += verdict.decided
        merged += len(set(winners)) > 1
    formula = majority_probability(k, p)
    return {"k": k, "p": p, "measured": round(right / trials, 4), "formula": round(formula, 4),
            "difference": round(right / trials - formula, 4), "decided_rate": round(decided / trials, 4),
            "wrong_merged_into_winner_rate": round(merged / trials, 4)}


def scenarios(trials: int, rng: random.Random) -> dict[str, Any]:
    return {
        "correlated_errors": [correlated_cell(k, p, rho, trials, rng)
                              for rho in (0.0, 0.3, 0.6) for k in (3, 9) for p in (0.7,)],
        "near_duplicate_text": [near_duplicate_cell(k, p, trials, rng) for k, p in ((3, 0.6), (5, 0.6), (5, 0.8))],
        "paraphrases": [paraphrase_cell(k, p, trials, rng) for k, p in ((3, 0.8), (5, 0.8), (5, 0.9))],
        "even_k_ties": [{**cell(k, 0.7, trials, rng), "formula_k_minus_1": round(majority_probability(k - 1, 0.7), 4)}
                        for k in (2, 4, 6)],
        "escalation_policy": [cell(k, 0.7, trials, rng, escalate=True) for k in (2, 3, 4)],
    }


# --- real deployments -----------------------------------------------------------------------------

def gateway_voter(base_url: str, api_key: str, model: str) -> Voter:
    import openai

    client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=2, timeout=120)

    def answer(q: Question) -> str:
        reply = client.chat.completions.create(model=model, temperature=1.0, messages=[
            {"role": "system", "content": "Answer with the number only."}, {"role": "user", "content": q.prompt}])
        return (reply.choices[0].message.content or "").strip()
    return answer


def poisson_binomial_majority(ps: Sequence[float]) -> float:
    """P(strict majority right) for independent voters of accuracies ps (the formula with unequal p)."""
    k = len(ps)
    total = 0.0
    for i in range(k // 2 + 1, k + 1):
        for right in combinations(range(k), i):
            term = 1.0
            for j, p in enumerate(ps):
                term *= p if j in right else 1 - p
            total += term
    return total


def real(base_url: str, models: Sequence[str], questions: int, rng: random.Random) -> dict[str, Any]:
    api_key = os.environ.get("NEXUS_API_KEY")
    if not api_key:
        raise SystemExit("--real needs NEXUS_API_KEY (a NexusAI key with the inference scope)")
    voters = [gateway_voter(base_url, api_key, m) for m in models]
    asked = [arithmetic(rng) for _ in range(questions)]
    answers = [[v(q) for v in voters] for q in asked]
    def is_right(answer: str, q: Question) -> bool:  # the same normalisation the vote uses (42 == 42.0)
        return structured_key(answer) == structured_key(q.right)

    accuracy = [sum(is_right(a[j], q) for a, q in zip(answers, asked, strict=True)) / questions
                for j in range(len(models))]
    right = 0
    for a, q in zip(answers, asked, strict=True):
        verdict = decide(a)
        right += verdict.decided and is_right(a[verdict.winner], q)
    return {"models": list(models), "questions": questions,
            "per_model_accuracy": dict(zip(models, [round(x, 4) for x in accuracy], strict=True)),
            "consensus_measured": round(right / questions, 4),
            "consensus_predicted_independent": round(poisson_binomial_majority(accuracy), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument("--real", metavar="BASE_URL", help="use real deployments through this NexusAI /v1 URL")
    parser.add_argument("--models", default="", help="comma-separated model names for --real (k = their number)")
    parser.add_argument("--questions", type=int, default=50, help="questions for --real")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    started = time.perf_counter()
    if args.real:
        result: dict[str, Any] = {"mode": "real", **real(args.real, [m for m in args.models.split(",") if m],
                                                          args.questions, rng)}
    else:
        grid = [cell(k, p, args.trials, rng) for p in PS for k in KS]
        result = {
            "mode": "simulated", "trials_per_cell": args.trials, "seed": args.seed,
            "binomial": grid,
            "max_abs_difference": max(abs(c["difference"]) for c in grid),
            "all_within_3_stderr": all(c["within_3_stderr"] for c in grid),
            "where_it_breaks": scenarios(args.trials, rng),
        }
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
