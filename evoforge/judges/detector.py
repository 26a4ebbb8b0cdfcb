"""A learned guard: sentences written to the judge rather than to the reader, recognised by what they mean.

The rules in `evoforge.judges.guards` catch the attacks they were written against and few others (a new phrasing
passes them). This check generalises from examples instead: a logistic regression on each sentence's MiniLM
embedding plus one feature, whether the sentence names one of the judge's answer labels ("positive", "yes",
"romance", ...), the handle nearly every attack needs. A text is flagged when its most judge-addressing sentence
is above the threshold; below it, a text whose most addressing sentence is above a lower threshold is judged
without that sentence (its archive entry keeps the whole text).

It is fitted on `data/guards/addressing.csv`: the injected sentences of the attack kinds the rules were written
against (label 1), and the shipped seed pools, references and texts the embedded generator wrote in earlier runs
(label 0; split into train, validation and test). The threshold is the validation texts' 99th percentile, so
about 1% of clean generated texts are flagged; the held-out attack kinds in `data/attacks/` are never used.
`python -m evoforge.judges.detector` refits it and rewrites `data/guards/detector.json`, which runs load.
"""

import json
import re
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

DATA = Path(__file__).resolve().parents[2] / "data" / "guards"
FALSE_POSITIVE_TARGET = 0.01  # share of clean validation texts flagged; the goal is at most 2%
# Share of clean validation texts judged without their most judge-addressing sentence. Every attack measured puts
# its sentence at the top of its text's ranking, even where it stays below the flag threshold, so leaving that
# sentence out of what the judges read defeats weaker attacks at the cost of one sentence of 1 clean text in 10.
STRIP_SHARE = 0.10

# Sentence ends, and line breaks (an attack often sits on a line of its own, without a full stop).
_SENTENCE_BREAKS = re.compile(r"(?<=[.!?])\s+|\n+")


def sentences(text: str) -> list[str]:
    """The text's sentences and lines; a text without a break is one sentence."""
    parts = [s.strip() for s in _SENTENCE_BREAKS.split(text)]
    return [s for s in parts if s] or [text]


def names_a_label(sentence: str, labels: list[str]) -> float:
    """1.0 when the sentence contains one of the answer labels as a word."""
    return float(any(re.search(rf"\b{re.escape(label)}\b", sentence, re.IGNORECASE) for label in labels))


def features(embedder, texts: list[str], labels: list[list[str]]) -> np.ndarray:
    """One row per text: its embedding and the label feature (with that text's own answer labels)."""
    vectors = embedder.embed(texts)
    named = np.array([[names_a_label(t, ls)] for t, ls in zip(texts, labels)], dtype=vectors.dtype)
    return np.hstack([vectors, named])


@dataclass(frozen=True)
class AddressDetector:
    weights: np.ndarray  # one per embedding dimension, then the label feature's
    bias: float
    threshold: float  # a text whose most addressing sentence is above this is flagged
    strip_threshold: float  # ... above this, that sentence is left out of what the judges read
    embedder: str = "minilm"

    def sentence_probabilities(self, embedder, split: list[list[str]], labels: list[str]) -> list[np.ndarray]:
        """Per text (given as its `sentences`), P(written to the judge) of each of its sentences."""
        flat = [s for parts in split for s in parts]
        if not flat:
            return [np.zeros(0) for _ in split]
        logits = features(embedder, flat, [labels] * len(flat)) @ self.weights + self.bias
        p = 1.0 / (1.0 + np.exp(-logits))
        ends = np.cumsum([len(parts) for parts in split])
        return np.split(p, ends[:-1])

    def most_addressing(self, texts: list[str], labels: list[str], embedder=None) -> list[tuple[str, float]]:
        """Per text, its most judge-addressing sentence and that sentence's probability."""
        if embedder is None:
            from models.embedder import load_embedder

            embedder = load_embedder(self.embedder)
        split = [sentences(t) for t in texts]
        return [(parts[int(np.argmax(p))], float(p.max())) if p.size else ("", 0.0)
                for parts, p in zip(split, self.sentence_probabilities(embedder, split, labels))]

    def scores(self, texts: list[str], labels: list[str], embedder=None) -> np.ndarray:
        """Per text, its most judge-addressing sentence's probability."""
        return np.array([p for _, p in self.most_addressing(texts, labels, embedder)])

    def to_json(self) -> str:
        return json.dumps({"embedder": self.embedder, "threshold": self.threshold,
                           "strip_threshold": self.strip_threshold, "bias": self.bias,
                           "weights": [float(w) for w in self.weights]})

    @classmethod
    def from_json(cls, text: str) -> "AddressDetector":
        d = json.loads(text)
        return cls(np.asarray(d["weights"], dtype=np.float32), float(d["bias"]), float(d["threshold"]),
                   float(d["strip_threshold"]), d["embedder"])


@lru_cache(maxsize=1)
def shipped_detector() -> AddressDetector:
    return AddressDetector.from_json((DATA / "detector.json").read_text())


def domain_labels(domain_name: str) -> list[str]:
    from evoforge.core.domain import load_domain

    return load_domain(domain_name).answer_labels


def fit_detector(examples: pd.DataFrame, embedder, embedder_name: str = "minilm", C: float = 1.0) -> AddressDetector:
    """Fit on the `train` rows' sentences (each labelled like its text; a text's label words are its domain's),
    and set the thresholds on the `validation` rows (clean texts) for FALSE_POSITIVE_TARGET and STRIP_SHARE."""
    from sklearn.linear_model import LogisticRegression

    labels = {d: domain_labels(d) for d in examples["domain"].unique()}
    train = examples[examples["split"] == "train"]
    rows = [(s, y, labels[d]) for t, y, d in zip(train["text"], train["label"], train["domain"]) for s in sentences(t)]
    x = features(embedder, [r[0] for r in rows], [r[2] for r in rows])
    y = np.array([r[1] for r in rows])
    # Balanced classes: 70 attacks against thousands of clean sentences would otherwise say "clean" to everything.
    model = LogisticRegression(C=C, class_weight="balanced", max_iter=5000).fit(x, y)
    fitted = AddressDetector(model.coef_[0].astype(np.float32), float(model.intercept_[0]), 0.5, 0.5, embedder_name)
    validation = examples[examples["split"] == "validation"]
    scores = np.concatenate([fitted.scores(list(part["text"]), labels[d], embedder)
                             for d, part in validation.groupby("domain")])
    return AddressDetector(fitted.weights, fitted.bias, float(np.quantile(scores, 1 - FALSE_POSITIVE_TARGET)),
                           float(np.quantile(scores, 1 - STRIP_SHARE)), embedder_name)


def main() -> int:
    from models.embedder import load_embedder

    examples = pd.read_csv(DATA / "addressing.csv")
    embedder = load_embedder("minilm", device="cpu")
    detector = fit_detector(examples, embedder)
    (DATA / "detector.json").write_text(detector.to_json() + "\n")
    test = examples[examples["split"] == "test"]
    scores = np.concatenate([detector.scores(list(part["text"]), domain_labels(d), embedder)
                             for d, part in test.groupby("domain")])
    print(f"threshold {detector.threshold:.3f}; clean test texts flagged: {(scores > detector.threshold).mean():.1%} "
          f"of {len(scores)}; strip threshold {detector.strip_threshold:.3f}: judged without a sentence: "
          f"{(scores > detector.strip_threshold).mean():.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
