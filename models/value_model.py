"""A learned value model ("world model" in seed 002's words): from a text's sentence embedding and a few cheap
features, predict what the judges would say (quality and each measure) and whether the text would enter the
archive, without calling a judge.

It is small on purpose: ridge regression for the judges' scores and logistic regression for P(enters the archive)
on the embedding plus five features, fitted in well under a second on hundreds of rows, so a run can refit it
every generation on everything judged so far. It imports nothing of the project: callers pass the embeddings
(MiniLM, models.embedder) and the context a text is compared with (the few-shot pool and the archive's elites).
"""

from dataclasses import dataclass, field

import numpy as np
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

CHEAP_FEATURES = ["log_words", "log_chars", "pool_overlap", "elite_overlap", "nearest_elite_cosine"]
NGRAM = 2  # word bigrams: long enough to catch copied phrases, short enough to match in 30-word texts


def ngrams(text: str, n: int = NGRAM) -> set[tuple[str, ...]]:
    words = text.lower().split()
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


@dataclass
class Context:
    """What a text is compared with when it is written: the few-shot pool and the archive's elites (texts and
    unit-length embeddings). A past candidate is featurised against the context of its own generation, so the
    model learns what 'near an elite' meant when the label was earned."""

    pool: list[str] = field(default_factory=list)
    elites: list[str] = field(default_factory=list)
    elite_embeddings: np.ndarray | None = None

    def __post_init__(self):
        self.pool_ngrams = set().union(*map(ngrams, self.pool)) if self.pool else set()
        self.elite_ngrams = set().union(*map(ngrams, self.elites)) if self.elites else set()


def _overlap(grams: set, reference: set) -> float:
    """Share of a text's n-grams that occur in the reference texts (0 for a text too short to have any)."""
    return len(grams & reference) / len(grams) if grams else 0.0


def features(texts: list[str], embeddings: np.ndarray, context: Context) -> np.ndarray:
    """The model's input: each text's embedding, then `CHEAP_FEATURES`; shape (len(texts), dim + 5)."""
    embeddings = np.asarray(embeddings, dtype=np.float32).reshape(len(texts), -1)
    elite = context.elite_embeddings
    nearest = (embeddings @ elite.T).max(axis=1) if elite is not None and len(elite) else np.zeros(len(texts))
    cheap = []
    for text in texts:
        grams = ngrams(text)
        cheap.append([np.log1p(len(text.split())), np.log1p(len(text)), _overlap(grams, context.pool_ngrams),
                      _overlap(grams, context.elite_ngrams)])
    cheap = np.column_stack([np.asarray(cheap, dtype=np.float32).reshape(len(texts), 4), nearest])
    return np.hstack([embeddings, cheap.astype(np.float32)])


@dataclass
class ValueModel:
    """Ridge regressions for each target (the judges' quality and measures) and a logistic regression for
    P(enters the archive). `fit` first measures the error on a held-out share of the rows, then refits on all."""

    targets: list[str] = field(default_factory=list)
    heldout: dict[str, float] = field(default_factory=dict)  # held-out error, see `fit`
    rows: int = 0
    _regressor: object = None
    _classifier: object = None
    _base_rate: float = 0.0

    ALPHAS = tuple(np.logspace(-1, 4, 11))  # ridge strengths tried by leave-one-out (cheap for ridge)

    def fit(self, x: np.ndarray, targets: dict[str, np.ndarray], inserted: np.ndarray, heldout_share: float = 0.25,
            seed: int = 0) -> "ValueModel":
        """Fit on rows `x` (from `features`); `targets` name -> values, `inserted` 0/1 per row.

        `heldout` gets, on a random `heldout_share` of the rows (fitted on the rest): `mae_<target>` and
        `mae_<target>_baseline` (predicting the training mean, the bar a useful model must clear) and, where both
        outcomes occur in the held-out rows, `auc_inserted`. Then every row is used for the model that predicts.
        """
        x = np.asarray(x, dtype=np.float64)
        if len(x) < 4:
            raise ValueError(f"value model: expected at least 4 judged rows to fit, got {len(x)}")
        self.targets = list(targets)
        y = np.column_stack([np.asarray(targets[t], dtype=np.float64) for t in self.targets])
        inserted = np.asarray(inserted, dtype=int)
        order = np.random.default_rng(seed).permutation(len(x))
        n_test = max(1, int(round(heldout_share * len(x))))
        test, train = order[:n_test], order[n_test:]
        part = self._fitted(x[train], y[train], inserted[train])
        predicted = part.predict(x[test])
        self.heldout = {}
        for j, name in enumerate(self.targets):
            self.heldout[f"mae_{name}"] = float(np.abs(predicted[name] - y[test, j]).mean())
            self.heldout[f"mae_{name}_baseline"] = float(np.abs(y[train, j].mean() - y[test, j]).mean())
        if len(set(inserted[test])) == 2:
            self.heldout["auc_inserted"] = float(roc_auc_score(inserted[test], predicted["p_insert"]))
        self.heldout["heldout_rows"] = float(len(test))
        full = self._fitted(x, y, inserted)
        self._regressor, self._classifier, self._base_rate = full._regressor, full._classifier, full._base_rate
        self.rows = len(x)
        return self

    def _fitted(self, x: np.ndarray, y: np.ndarray, inserted: np.ndarray) -> "ValueModel":
        model = ValueModel(self.targets)
        model._regressor = make_pipeline(StandardScaler(), RidgeCV(alphas=self.ALPHAS)).fit(x, y)
        model._base_rate = float(inserted.mean())
        if len(set(inserted)) == 2:  # with one outcome only, P(insert) is that outcome's rate for every text
            # Strong regularisation: a few hundred rows against ~390 inputs. C=0.001 ranked the next generation best
            # on the test run (forward AUC 0.75, against 0.69 at C=0.01 and 0.67 at C=1).
            model._classifier = make_pipeline(StandardScaler(), LogisticRegression(C=0.001, max_iter=2000)).fit(
                x, inserted)
        return model

    @property
    def fitted(self) -> bool:
        return self._regressor is not None

    def predict(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Per row: each target's prediction, and `p_insert`."""
        if not self.fitted:
            raise RuntimeError("value model: call fit() before predict()")
        x = np.asarray(x, dtype=np.float64)
        y = np.atleast_2d(self._regressor.predict(x)).reshape(len(x), len(self.targets))
        out = {name: y[:, j] for j, name in enumerate(self.targets)}
        out["p_insert"] = (self._classifier.predict_proba(x)[:, 1] if self._classifier is not None
                           else np.full(len(x), self._base_rate))
        return out
