"""What the Prefect UI's run forms are built from: every parameter of every deployed flow has a description."""

import pytest
from prefect.utilities.callables import parameter_schema

from flows.agents import compare_agent, train_agent_run, train_world_model
from flows.evolution import evolution_run
from flows.finetune import evaluate_model, finetune_model, rl_finetune
from flows.merge import merge_models
from flows.ingest import ingest
from flows.tournament import moe_tournament


def undescribed(schema: dict) -> list[str]:
    """Properties (nested models included) without a description."""
    missing = []
    models = {"": schema, **{f"{name}.": d for name, d in schema.get("definitions", {}).items()}}
    for prefix, model in models.items():
        for name, prop in model.get("properties", {}).items():
            if not prop.get("description") and "$ref" not in prop and "allOf" not in prop:
                missing.append(prefix + name)
    return missing


@pytest.mark.parametrize("flow", [evolution_run, moe_tournament, finetune_model, rl_finetune, evaluate_model, merge_models,
                                  ingest, train_world_model, train_agent_run, compare_agent], ids=lambda f: f.name)
def test_every_run_form_field_has_a_description(flow):
    schema = parameter_schema(flow).model_dump_for_openapi()
    fields = len(schema["properties"]) + sum(len(d.get("properties", {})) for d in schema.get("definitions", {}).values())
    assert fields >= 5, flow.name  # nested models are checked too (RunConfig alone has 20 fields)
    assert undescribed(schema) == []


def test_limits_reach_the_form():
    schema = parameter_schema(evolution_run).model_dump_for_openapi()
    run = schema["definitions"]["RunConfig"]["properties"]
    assert run["generations"]["minimum"] == 1 and run["generations"]["maximum"] == 100_000
    assert run["precision"]["enum"] == ["auto", "float32", "bfloat16"]


def test_ingest_form_refuses_an_overlap_as_long_as_a_chunk():
    from pydantic import ValidationError

    from evoforge.core.config import IngestConfig

    schema = parameter_schema(ingest).model_dump_for_openapi()
    assert schema["definitions"]["IngestConfig"]["required"] == ["path"]
    with pytest.raises(ValidationError, match="overlap_words"):
        IngestConfig(path="docs", chunk_words=50, overlap_words=50)


def test_merge_form_asks_for_the_models_and_offers_the_methods():
    schema = parameter_schema(merge_models).model_dump_for_openapi()
    assert schema["required"] == ["models"]
    merge = schema["definitions"]["MergeConfig"]["properties"]
    assert merge["method"]["enum"] == ["linear", "ties", "dare_ties", "dare_linear"]
    assert merge["density"]["exclusiveMinimum"] == 0 and merge["density"]["maximum"] == 1
