"""Training data from an archive: each elite becomes (prompt asking for its niche, the elite's text).

A model tuned on it can be steered to any niche ("write a clearly negative one"), which is what evaluation and a
tuned expert then ask of it.
"""

import json
from pathlib import Path

import pandas as pd

from evoforge.core.domain import Domain
from evoforge.core.niches import niche_prompt


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
