"""Agreement between answers to one subtask: who agrees with whom, which cluster wins, how strongly.

Two measures, chosen per vote by what the answers look like:
- **exact** for structured answers (JSON, numbers, short labels): each answer is normalised to a key
  (canonical JSON with sorted keys; a number in its shortest decimal form; a label lower-cased with its
  punctuation stripped) and answers with equal keys agree. Used when every answer is structured.
- **text** for free text: token-set Jaccard similarity (lower-cased words, punctuation dropped), and
  average-link clustering: an answer joins the cluster whose members it resembles most on average, if
  that average reaches `threshold`; else it starts a cluster. Cheap, pure, deterministic; it cannot see
  paraphrases that share few words (embeddings would; they are not wired here), and it lets
  near-duplicates that differ in one decisive word (a negation, a number) agree.

A vote is *decided* when the largest cluster is a strict majority of the voters (size > n/2): the
binomial majority-vote rule. Ties (possible for even n) and pluralities are undecided; the orchestrator
then escalates to one more voter, and if that still does not decide, flags the subtask.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

EXACT = "exact"
TEXT = "text"
DEFAULT_THRESHOLD = 0.6
"""Jaccard similarity at which two free-text answers count as the same answer (0.6: most words shared)."""
MAX_LABEL_WORDS = 4
"""Answers of at most this many words are labels ("yes", "Paris", "O(n log n)") and compared exactly."""

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_NUMBER = re.compile(r"^[+-]?(\d{1,3}(,\d{3})+|\d+)?(\.\d+)?([eE][+-]?\d+)?$")
_FENCE = re.compile(r"^```[a-zA-Z]*\s*\n?(.*?)\n?```$", re.DOTALL)


@dataclass(frozen=True)
class Verdict:
    """The outcome of one vote. `clusters` hold voter indexes, largest first (ties: earliest voter first)."""

    mode: str  # EXACT or TEXT
    clusters: tuple[tuple[int, ...], ...]
    winner: int  # index of the answer that represents the winning cluster
    score: float  # share of voters in the winning cluster, 0..1
    decided: bool  # the winning cluster is a strict majority
    tie: bool  # two or more clusters share the largest size
    cohesion: float  # mean pairwise similarity inside the winning cluster (1.0 for exact, or one member)

    @property
    def sizes(self) -> list[int]:
        return [len(c) for c in self.clusters]


def _strip(answer: str) -> str:
    text = unicodedata.normalize("NFKC", answer).strip()
    fenced = _FENCE.match(text)
    return fenced.group(1).strip() if fenced else text


def structured_key(answer: str) -> str | None:
    """The normalised key of a structured answer (JSON, number, short label); None for free text."""
    text = _strip(answer)
    if not text:
        return "label:"
    if text[0] in "{[":
        try:
            return "json:" + json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
        except ValueError:
            pass
    number = text.rstrip(".").replace(" ", "")
    if _NUMBER.match(number) and any(ch.isdigit() for ch in number):
        try:
            value = Decimal(number.replace(",", ""))
        except InvalidOperation:
            value = None
        if value is not None and value.is_finite():
            normal = value.normalize()
            return "number:" + ("0" if normal.is_zero() else format(normal, "f"))
    words = tokens(text)
    if len(text.split()) <= MAX_LABEL_WORDS and words:
        return "label:" + " ".join(words)
    return None


def tokens(text: str) -> list[str]:
    return [w.casefold() for w in _WORD.findall(text)]


def jaccard(a: str, b: str) -> float:
    """Token-set Jaccard similarity: shared distinct words over all distinct words (two empties: 1.0)."""
    sa, sb = set(tokens(a)), set(tokens(b))
    if not sa and not sb:
        return 1.0
    return len(sa & sb) / len(sa | sb)


def cluster_exact(keys: Sequence[str]) -> list[list[int]]:
    groups: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    return list(groups.values())


def cluster_text(answers: Sequence[str], threshold: float = DEFAULT_THRESHOLD) -> list[list[int]]:
    """Average-link clustering in voter order: deterministic, and no answer joins a cluster it barely touches."""
    clusters: list[list[int]] = []
    for i, answer in enumerate(answers):
        best, best_sim = None, threshold
        for c in clusters:
            sim = sum(jaccard(answer, answers[j]) for j in c) / len(c)
            if sim >= best_sim:
                best, best_sim = c, sim
                if sim == 1.0:
                    break
        if best is None:
            clusters.append([i])
        else:
            best.append(i)
    return clusters


def decide(answers: Sequence[str], threshold: float = DEFAULT_THRESHOLD) -> Verdict:
    """Cluster the answers and pick the majority; pure, and the same whatever the voters were."""
    if not answers:
        raise ValueError("a vote needs at least one answer")
    keys = [structured_key(a) for a in answers]
    if all(k is not None for k in keys):
        mode, clusters = EXACT, cluster_exact([k for k in keys if k is not None])
    else:
        mode, clusters = TEXT, cluster_text(answers, threshold)
    ordered = sorted(clusters, key=lambda c: (-len(c), c[0]))
    top = ordered[0]
    n = len(answers)
    tie = len(ordered) > 1 and len(ordered[1]) == len(top)
    return Verdict(
        mode=mode, clusters=tuple(tuple(c) for c in ordered), winner=_medoid(answers, top, mode),
        score=len(top) / n, decided=len(top) * 2 > n, tie=tie, cohesion=_cohesion(answers, top, mode),
    )


def _medoid(answers: Sequence[str], members: Sequence[int], mode: str) -> int:
    """The member most like the others: the cluster's representative answer."""
    if mode == EXACT or len(members) <= 2:
        return members[0]
    return max(members, key=lambda i: (sum(jaccard(answers[i], answers[j]) for j in members), -i))


def _cohesion(answers: Sequence[str], members: Sequence[int], mode: str) -> float:
    if mode == EXACT or len(members) < 2:
        return 1.0
    pairs = [(a, b) for x, a in enumerate(members) for b in members[x + 1:]]
    return round(sum(jaccard(answers[a], answers[b]) for a, b in pairs) / len(pairs), 4)


def majority_probability(k: int, p: float) -> float:
    """P(strict majority of k independent voters, each right with probability p, is right): the binomial rule.

    For even k a tie counts as not right (it is undecided), which is what `decide` does.
    """
    from math import comb

    return sum(comb(k, i) * p**i * (1 - p) ** (k - i) for i in range(k // 2 + 1, k + 1))
