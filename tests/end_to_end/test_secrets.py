"""Secrets from the environment never reach what a run writes: Parquet and JSON in the run folder, MLflow params,
tags and artifacts, Prefect's logs and artifacts. A key is planted where backends and hubs look for theirs, a run
goes through the real flow, and every output is searched for it."""

import secrets
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from evoforge.core.config import RunConfig
from evoforge.core.tracking import tracking_uri

pytestmark = pytest.mark.slow

TINY = dict(generations=1, experts=2, batch_size=2, max_new_tokens=8, continue_tokens=0, seed=2,
            judge_references=False, heldout_judge=False)


def test_a_planted_key_reaches_no_output(prefect_server, backend, tmp_path, monkeypatch, caplog, capsys):
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    from flows.evolution import evolution_run

    key = f"sk-evoforge-planted-{secrets.token_hex(12)}"
    for name in ("OPENAI_API_KEY", "HF_TOKEN", "EVOFORGE_API_KEY", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.setenv(name, key)
    state = evolution_run(RunConfig(**TINY, out=str(tmp_path), run_name="secret"), return_state=True)
    summary = state.result()
    found = []

    for path in Path(tmp_path).rglob("*"):  # every file the run wrote: Parquet, JSON, plots
        if path.is_file() and key.encode() in path.read_bytes():
            found.append(str(path))

    client = MlflowClient(tracking_uri())
    run = client.get_run(summary["mlflow_run_id"])
    blobs = [str(run.data.params), str(run.data.tags)]
    downloaded = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path / "mlflow-artifacts")))
    blobs += [p.read_bytes().decode("latin-1") for p in downloaded.rglob("*") if p.is_file()]

    async def prefect_outputs():
        async with get_client() as prefect:
            flow_run_id = state.state_details.flow_run_id
            logs = await prefect.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])),
                                           limit=200, offset=0)
            found = await prefect._client.post("/artifacts/filter", json={
                "flow_runs": {"id": {"any_": [str(flow_run_id)]}}, "artifacts": {}, "task_runs": {},
                "limit": 200, "offset": 0, "sort": "CREATED_DESC"})
            artifacts = found.json()
            flow_run = await prefect.read_flow_run(flow_run_id)
            return [l.message for l in logs] + [str(a["data"]) for a in artifacts] + [str(flow_run.parameters)]

    async def outputs_after_flush():
        await APILogHandler.aflush()  # the run's logs reach the server in batches: send the last one first
        return await prefect_outputs()

    prefect_blobs = asyncio.run(outputs_after_flush())
    assert prefect_blobs, "the flow run's logs and artifacts were not found"
    blobs += prefect_blobs + [caplog.text, *capsys.readouterr()]
    found += [blob[:80] for blob in blobs if key in blob]
    assert found == []
