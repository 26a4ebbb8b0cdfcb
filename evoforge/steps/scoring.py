"""`evoforge score`: any texts scored by the panel and guards a run would use, to check a judge before a night's run.

    evoforge score --domain opinions --input texts.txt --output scores.csv

Input: a .txt file (one text a line) or a .csv file with a `text` column. Output: one row per text with the
panel's `quality` and `measure_<axis>` columns, each judge's (calibrated and raw) scores, and the guards'
`flagged` / `guard_flags` / `guard_left_out`.
"""

from pathlib import Path

import pandas as pd

from evoforge.core.config import RunConfig, judge_models
from evoforge.core.domain import load_domain


def read_texts(path: str | Path) -> list[str]:
    """The texts to score, refused with the reason and the fix when the file cannot give any."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--input {path}: no such file; give a .txt file (one text a line) or a .csv with a text column")
    if path.suffix == ".txt":
        texts = [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()]
    elif path.suffix == ".csv":
        frame = pd.read_csv(path)
        if "text" not in frame.columns:
            raise ValueError(f"--input {path}: no 'text' column (columns: {', '.join(map(str, frame.columns))}); "
                             "name the column with the texts 'text'")
        texts = frame["text"].fillna("").astype(str).str.strip().tolist()
    else:
        raise ValueError(f"--input {path}: expected a .txt or .csv file, got '{path.suffix or 'no extension'}'")
    texts = [t for t in texts if t]
    if not texts:
        raise ValueError(f"--input {path}: holds no text to score")
    return texts


def score_texts(config: RunConfig, texts: list[str]) -> pd.DataFrame:
    """The run's panel (fitted on the domain's references as a run fits it) applied to `texts`."""
    from evoforge.steps.evolution import make_panel
    from models.loading import load_backend

    domain = load_domain(config.domain)
    backends = {m: load_backend(m, config.precision, config.device) for m in judge_models(config.judges)}
    panel = make_panel(config, domain, backends)
    scores = panel.judge(backends, texts)
    return pd.concat([pd.DataFrame({"text": texts}, index=scores.index), scores], axis=1)
