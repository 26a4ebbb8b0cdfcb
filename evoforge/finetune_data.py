"""Training data from an archive: each elite becomes (prompt asking for its niche, the elite's text).

A model tuned on it can be steered to any niche ("write a clearly negative one"), which is what evaluation and a
tuned expert then ask of it.
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd

from evoforge.domain import Axis, Domain


def _degree(strength: float) -> str:
    if strength >= 0.95:
        return "very"
    if strength >= 0.8:
        return "clearly"
    return "somewhat"


def axis_phrase(axis: Axis, value: float) -> str:
    """'clearly positive' for P(first label) = 0.85; 'very negative' for 0.02."""
    label, strength = (axis.labels[0], value) if value >= 0.5 else (axis.labels[1], 1.0 - value)
    return f"{_degree(strength)} {label}"


def bin_centre(axis: Axis, index: int) -> float:
    edges = [0.0, *axis.bins, 1.0]
    return (edges[index] + edges[index + 1]) / 2


def niche_wish(domain: Domain, bin_indices: list[int]) -> str:
    """One niche in words: 'sentiment is very negative', 'genre is clearly horror and whose ending is ...'."""
    wishes = [f"{axis.name} is {axis_phrase(axis, bin_centre(axis, int(b)))}" for axis, b in zip(domain.axes, bin_indices)]
    return " and whose ".join(wishes)


def niche_prompt(domain: Domain, bin_indices: list[int]) -> str:
    """The instruction that asks for one niche of the domain's grid."""
    return f"{domain.description} Write one whose {niche_wish(domain, bin_indices)}. Reply with the text only."


def random_niche(domain: Domain, rng: np.random.Generator) -> list[int]:
    return [int(rng.integers(axis.num_bins)) for axis in domain.axes]


def ever_elites(candidates: pd.DataFrame, archive) -> pd.DataFrame:
    """Every candidate that entered the archive during the run (an elite at the time), once per text, with the
    bin it was inserted in: more training data than the final archive alone, same meaning."""
    inserted = candidates[candidates["inserted"]].drop_duplicates("text").reset_index(drop=True)
    measures = inserted[[f"measure_{a}" for a in archive.axis_names]].to_numpy()
    bins = archive.bin_index(measures)
    out = inserted[["cid", "text", "quality"]].assign(cell=archive.cell_index(measures) if len(inserted) else [])
    for j, axis in enumerate(archive.axis_names):
        out[f"bin_{axis}"] = bins[:, j]
    return out


def elite_examples(elites: pd.DataFrame, domain: Domain) -> pd.DataFrame:
    """One training example per elite: prompt, completion, and where it came from."""
    bins = elites[[f"bin_{a}" for a in domain.axis_names]].to_numpy()
    return pd.DataFrame(
        {
            "prompt": [niche_prompt(domain, list(row)) for row in bins],
            "completion": elites["text"].tolist(),
            "cell": elites["cell"].to_numpy(),
            "quality": elites["quality"].to_numpy(),
            "cid": elites["cid"].to_numpy(),
        }
    )


def write_examples(examples: pd.DataFrame, folder: Path) -> tuple[Path, Path]:
    """The data set as Parquet and as chat-format JSONL ({"messages": [user, assistant]} per line)."""
    folder.mkdir(parents=True, exist_ok=True)
    parquet = folder / "finetune_data.parquet"
    examples.to_parquet(parquet, index=False)
    jsonl = folder / "finetune_data.jsonl"
    with jsonl.open("w", encoding="utf-8") as fh:
        for prompt, completion in zip(examples["prompt"], examples["completion"]):
            messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
            fh.write(json.dumps({"messages": messages}, ensure_ascii=False) + "\n")
    return parquet, jsonl
