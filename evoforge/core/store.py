"""The run folder `runs/<run name>/`: every candidate, archive snapshot and expert state as Parquet.

A generation is committed when `state.json` is rewritten, last and atomically, after its Parquet files: a run that
is interrupted resumes from its last committed generation and rewrites whatever the broken one left behind.

    config.json               the run's configuration
    state.json                completed generations, MLflow run id, generations logged to MLflow
    domain.parquet            the domain (one row) and pool.parquet, the seed pool
    candidates/gen_NNNN.parquet  every candidate of a generation (merged into candidates.parquet at the end)
    archive/gen_NNNN.parquet  the archive's elites after a generation
    experts.parquet           every expert's state after every generation (a tuned model's expert that joins
                              between generations is added to the last committed one's rows at once); with
                              evolving arrangements also each culled expert's last row (`culled` = the generation),
                              and every row's lineage (`parent_ids`, `born`)
    metrics/gen_NNNN.json     a generation's metrics, as logged to MLflow (a resumed run logs what a crash skipped)
    finetune/<tag>/outcome.json  a fine-tune's outcome (checkpoint, registered version), written when it has
                              finished: a mid-run fine-tune cut short by a kill is redone on resume, a finished one not

An island run (islands > 1) also writes, in the same commit, `islands/gen_NNNN.parquet` (each island's elites, with
an `island` column; archive/ holds their union) and, after a generation with a migration, `migrations/gen_NNNN.parquet`
(every migrant: from which island to which, and whether the receiver's archive took it); its candidates and experts
carry an `island` column.
"""

import json
import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


def atomic_write(path: Path, write) -> Path:
    """`write(tmp)` a temporary file beside `path`, then rename it over `path`: a process killed at any point leaves
    either the old file or the new one, never a truncated one (a failed write leaves the old one and no temporary)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    return path


def write_parquet(df: pd.DataFrame, path: Path) -> Path:
    return atomic_write(path, lambda tmp: df.to_parquet(tmp, index=False))


def write_json(data: dict, path: Path) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, default=str)))


def living(experts: pd.DataFrame) -> pd.DataFrame:
    """Expert rows without those of experts culled after their generation (evolving arrangements)."""
    return experts[experts["culled"].isna()] if "culled" in experts else experts


class RunStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    # --- paths ---------------------------------------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.root / "state.json"

    def candidates_part(self, generation: int) -> Path:
        return self.root / "candidates" / f"gen_{generation:04d}.parquet"

    def archive_snapshot(self, generation: int) -> Path:
        return self.root / "archive" / f"gen_{generation:04d}.parquet"

    @property
    def experts_path(self) -> Path:
        return self.root / "experts.parquet"

    @property
    def candidates_path(self) -> Path:
        return self.root / "candidates.parquet"

    # --- state ---------------------------------------------------------------------------------------------------
    def read_state(self) -> dict | None:
        return json.loads(self.state_path.read_text()) if self.state_path.is_file() else None

    def write_state(self, state: dict) -> None:
        write_json(state, self.state_path)

    # --- dataset prep ------------------------------------------------------------------------------------------
    def write_prep(self, config: dict, domain: dict, pool: list[str]) -> None:
        write_json(config, self.root / "config.json")
        write_parquet(pd.DataFrame([{k: json.dumps(v, default=str) for k, v in domain.items()}]), self.root / "domain.parquet")
        write_parquet(pd.DataFrame({"item": range(len(pool)), "text": pool}), self.root / "pool.parquet")

    # --- generations -------------------------------------------------------------------------------------------
    def metrics_part(self, generation: int) -> Path:
        return self.root / "metrics" / f"gen_{generation:04d}.json"

    def read_metrics(self, generation: int) -> dict:
        return json.loads(self.metrics_part(generation).read_text())

    def write_generation(self, generation: int, candidates: pd.DataFrame, elites: pd.DataFrame, experts: pd.DataFrame,
                         metrics: dict):
        write_json(metrics, self.metrics_part(generation))
        write_parquet(candidates, self.candidates_part(generation))
        write_parquet(elites, self.archive_snapshot(generation))
        history = pd.read_parquet(self.experts_path) if self.experts_path.is_file() else None
        if history is not None:  # drop rows of a generation that is being redone after an interruption
            history = history[history["generation"] < generation]
        write_parquet(pd.concat([history, experts], ignore_index=True) if history is not None else experts, self.experts_path)

    def island_snapshot(self, generation: int) -> Path:
        return self.root / "islands" / f"gen_{generation:04d}.parquet"

    def migrations_part(self, generation: int) -> Path:
        return self.root / "migrations" / f"gen_{generation:04d}.parquet"

    def write_islands(self, generation: int, elites: pd.DataFrame, migrations: pd.DataFrame | None) -> None:
        """An island run's part of a generation's commit (before `write_generation`; state.json comes last)."""
        write_parquet(elites, self.island_snapshot(generation))
        if migrations is not None:
            write_parquet(migrations, self.migrations_part(generation))
        elif self.migrations_part(generation).is_file():  # left by an interrupted try of this generation
            self.migrations_part(generation).unlink()

    def read_migrations(self, upto: int) -> pd.DataFrame:
        """Every migration of generations before `upto`, in generation order (empty when there was none)."""
        parts = [pd.read_parquet(self.migrations_part(g)) for g in range(upto) if self.migrations_part(g).is_file()]
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()

    def add_expert(self, generation: int, expert: dict) -> None:
        """Record an expert that joined after `generation` was committed as one of that generation's experts, at
        once and atomically: a run that dies before the next commit resumes with it. Adding it again replaces it."""
        history = pd.read_parquet(self.experts_path)
        history = history[(history["generation"] != generation) | (history["expert_id"] != expert["expert_id"])]
        row = pd.DataFrame([{"generation": generation, **expert}])
        write_parquet(pd.concat([history, row], ignore_index=True), self.experts_path)

    def finetune_record(self, tag: str) -> Path:
        return self.root / "finetune" / tag / "outcome.json"

    def write_finetune(self, tag: str, outcome: dict) -> None:
        write_json(outcome, self.finetune_record(tag))

    def read_finetune(self, tag: str) -> dict | None:
        """The finished fine-tune `tag`'s outcome, or None when it did not finish (or never started)."""
        path = self.finetune_record(tag)
        return json.loads(path.read_text()) if path.is_file() else None

    def read_elites(self, generation: int) -> pd.DataFrame:
        return pd.read_parquet(self.archive_snapshot(generation))

    def read_experts(self, generation: int) -> pd.DataFrame:
        """The population after `generation` (without the experts culled after it: their rows are lineage)."""
        history = pd.read_parquet(self.experts_path)
        return living(history[history["generation"] == generation]).reset_index(drop=True)

    def read_expert_history(self) -> pd.DataFrame:
        """Every expert row of the committed generations (culled experts' included); empty before the first."""
        return pd.read_parquet(self.experts_path) if self.experts_path.is_file() else pd.DataFrame(
            columns=["generation", "expert_id", "value"])

    def candidate_parts(self, upto: int) -> list[Path]:
        return [self.candidates_part(g) for g in range(upto) if self.candidates_part(g).is_file()]

    def read_candidates(self, upto: int, columns: list[str] | None = None) -> pd.DataFrame:
        parts = self.candidate_parts(upto)
        return pd.concat([pd.read_parquet(p, columns=columns) for p in parts], ignore_index=True) if parts else pd.DataFrame()

    def merge_candidates(self, upto: int) -> Path:
        """Stream the per-generation parts into one candidates.parquet (memory: one part at a time)."""
        parts = self.candidate_parts(upto)

        def write(tmp: Path):
            schema = pa.unify_schemas([pq.read_schema(p) for p in parts])
            with pq.ParquetWriter(tmp, schema) as writer:
                for p in parts:
                    writer.write_table(pq.read_table(p).cast(schema))

        return atomic_write(self.candidates_path, write)
