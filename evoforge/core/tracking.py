"""MLflow tracking: one MLflow run per evolution run, metrics logged in batches, artifacts beside them.

The active-run API of mlflow is per thread, and Prefect runs tasks in worker threads, so everything here goes
through an `MlflowClient` with an explicit run id.
"""

import re
import time
from contextlib import contextmanager
from pathlib import Path

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from models.resolve import tracking_uri

_SECRET = re.compile(r"(api[_-]?key|token|secret|password)", re.IGNORECASE)
_MAX_PARAM_CHARS = 6000


def redact(params: dict[str, str]) -> dict[str, str]:
    """Secrets never reach MLflow: any param whose name looks like a key, token or password is masked."""
    return {k: ("***" if _SECRET.search(k) else v) for k, v in params.items()}


class Tracker:
    def __init__(self, experiment: str, run_name: str, run_id: str | None = None, tags: dict | None = None):
        self.uri = tracking_uri()
        self.client = MlflowClient(self.uri)
        if run_id is None:
            self.experiment_id = self._experiment_id(experiment)
            run_id = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags or {}).info.run_id
        else:
            self.client.update_run(run_id, status="RUNNING")
            self.experiment_id = self.client.get_run(run_id).info.experiment_id
        self.run_id = run_id

    def _experiment_id(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = None
        if self.uri.startswith("sqlite:///"):  # keep artifacts next to the database, not in the working directory
            location = (Path(self.uri.removeprefix("sqlite:///")).parent / "mlartifacts").resolve().as_uri()
        # Tells the MLflow UI to open on the runs table (model development), not on the GenAI traces overview.
        return self.client.create_experiment(name, artifact_location=location,
                                             tags={"mlflow.experimentKind": "custom_model_development"})

    def child(self, run_name: str, tags: dict | None = None) -> "Tracker":
        """A nested run under this one (one per generation), so the MLflow UI can compare them side by side.

        A run killed after logging a generation but before committing it redoes that generation when it resumes;
        the child it had logged then is deleted first, so each generation keeps one child run."""
        for orphan in self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{self.run_id}' and attributes.run_name = '{run_name}'",
        ):
            self.client.delete_run(orphan.info.run_id)
        tags = {"mlflow.parentRunId": self.run_id, **{k: str(v) for k, v in (tags or {}).items()}}
        run_id = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags).info.run_id
        return Tracker("", run_name, run_id=run_id)

    def run_url(self) -> str | None:
        """The run's page in the MLflow UI when tracking goes to a server; None for a local database."""
        if not self.uri.startswith("http"):
            return None
        return f"{self.uri.rstrip('/')}/#/experiments/{self.experiment_id}/runs/{self.run_id}"

    def log_params(self, params: dict[str, str]) -> None:
        items = [Param(k, str(v)[:_MAX_PARAM_CHARS]) for k, v in redact(params).items()]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    def set_tags(self, tags: dict[str, str]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        for start in range(0, len(items), 1000):  # one request per 1000 metrics, never one per metric
            self.client.log_batch(self.run_id, metrics=items[start : start + 1000])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_artifacts(self, folder: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(self.run_id, str(folder), artifact_path)

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)

    @contextmanager
    def failing_on_error(self):
        """Marks the MLflow run FAILED when the block raises (Ctrl-C included), then lets the error through."""
        try:
            yield self
        except BaseException:
            self.finish("FAILED")
            raise
