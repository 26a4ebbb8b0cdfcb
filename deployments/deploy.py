"""Create the deployments of `deployments/prefect.yaml` on a process work pool, from this checkout.

    PREFECT_API_URL=http://127.0.0.1:4200/api python -m deployments.deploy [--pool evoforge]
    prefect worker start --pool evoforge

`prefect deploy --all --prefect-file deployments/prefect.yaml` reads the same file, but Prefect 3.8.8's CLI ends
every deployment by asking the server for the pool's workers with `limit: null`, which its own server (under
FastAPI 0.154) refuses with 422, so it stops after the first deployment. This script registers each deployment
with `RunnerDeployment.apply()`, which does not ask.
"""

import argparse
from pathlib import Path

import yaml
from prefect import Flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectAlreadyExists
from prefect.schedules import Cron

ROOT = Path(__file__).resolve().parents[1]
SPEC = Path(__file__).with_name("prefect.yaml")


def ensure_pool(name: str) -> None:
    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=name, type="process"))
        except ObjectAlreadyExists:
            pass


def deploy_all(spec: Path = SPEC, pool: str | None = None) -> list[str]:
    """Register every deployment in `spec` (its flows loaded from this checkout); returns their ids."""
    config = yaml.safe_load(spec.read_text())
    ids = []
    for d in config["deployments"]:
        work_pool = d["work_pool"]
        pool_name = pool or work_pool["name"]
        ensure_pool(pool_name)
        flow = Flow.from_source(source=str(ROOT), entrypoint=d["entrypoint"])
        schedules = [Cron(s["cron"], timezone=s.get("timezone")) for s in d.get("schedules", [])]
        deployment = flow.to_deployment(
            name=d["name"], schedules=schedules or None, parameters=d.get("parameters") or {},
            concurrency_limit=d.get("concurrency_limit"), tags=d.get("tags"), description=d.get("description"),
            work_pool_name=pool_name, job_variables=work_pool.get("job_variables") or {},
        )
        ids.append(str(deployment.apply()))
        print(f"deployed {flow.name}/{d['name']} to work pool '{pool_name}'")
    return ids


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", help="work pool name (default: each deployment's, 'evoforge')")
    parser.add_argument("--spec", default=str(SPEC), help="the prefect.yaml to read")
    args = parser.parse_args(argv)
    deploy_all(Path(args.spec), args.pool)


if __name__ == "__main__":
    main()
