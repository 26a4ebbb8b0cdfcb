"""How an MLflow run points back at the Prefect flow run that wrote it."""

from prefect.runtime import flow_run
from prefect.utilities.urls import url_for


def prefect_run_tags() -> dict[str, str]:
    """MLflow tags with the current flow run's id, name and UI address (empty outside a flow run)."""
    run_id = flow_run.get_id()
    return {
        "prefect_flow_run_id": run_id or "",
        "prefect_flow_run_name": flow_run.get_name() or "",
        # url_for knows the UI's route (runs/flow-run/<id>); flow_run.ui_url still gives an older one.
        "prefect_flow_run_url": (url_for("flow-run", obj_id=run_id) if run_id else None) or "",
    }
