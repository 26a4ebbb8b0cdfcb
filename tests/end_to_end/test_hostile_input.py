"""Hostile input, generated: malformed domain files, seed pools, run configs and flow parameters each get one
clear error (a DomainError, or exit status 2 with one line from the CLI), never a traceback or a start."""

import contextlib
import io
import json
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from app.cli import main
from evoforge.core.config import RunConfig
from evoforge.core.domain import MAX_ITEM_CHARS, Domain, DomainError, load_domain

SETTINGS = settings(max_examples=220, deadline=None, suppress_health_check=[HealthCheck.too_slow])

VALID = {
    "name": "toy",
    "generator": {"template": "Here is a toy:", "system_prompts": ["Toys."]},
    "seed_pool": "pool.txt",
    "quality": {"labels": ["yes", "no"], "instructions": ["Is it a toy?"]},
    "axes": [{"name": "size", "labels": ["big", "small"], "instructions": ["Big or small?"], "bins": [0.1, 0.5, 0.9]}],
}
# Where a broken value can go: (path into VALID, ...).
PLACES = [("name",), ("description",), ("generator",), ("generator", "template"), ("generator", "separator"),
          ("generator", "system_prompts"), ("seed_pool",), ("references",), ("quality",), ("quality", "labels"),
          ("quality", "instructions"), ("axes",), ("axes", 0), ("axes", 0, "name"), ("axes", 0, "labels"),
          ("axes", 0, "bins"), ("axes", 0, "instructions"), ("colour",)]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)


def put(tree, path, value):
    tree = json.loads(json.dumps(tree))
    node = tree
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return tree


def one_line(message: str) -> bool:
    return bool(message.strip()) and "\n" not in message.strip() and "Traceback" not in message


@SETTINGS
@given(place=st.sampled_from(PLACES), value=json_values, pool=st.binary(max_size=300))
def test_generated_broken_domain_files_and_pools_get_one_clear_error(place, value, pool):
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        (folder / "pool.txt").write_bytes(pool)
        path = folder / "toy.yaml"
        path.write_text(yaml.safe_dump(put(VALID, place, value)), encoding="utf-8")
        try:
            load_domain(path).check_files()
        except DomainError as err:
            assert one_line(str(err)) and str(folder) in str(err)


@pytest.mark.parametrize("case, expected", [
    ("non_utf8_domain", "not UTF-8 text"),
    ("non_utf8_pool", "field 'seed_pool' is not UTF-8"),
    ("long_item", f"over the limit of {MAX_ITEM_CHARS}"),
    ("empty_pool", "at least 3 items"),
    ("duplicate_bins", "field 'axes.0.bins'"),
    ("equal_labels", "field 'axes.0.labels'"),
])
def test_named_hostile_domains_are_refused_with_the_field(tmp_path, case, expected):
    domain, pool = dict(VALID), "a\nb\nc\n".encode()
    if case == "non_utf8_pool":
        pool = b"caf\xe9 au lait\nb\nc\n"
    if case == "long_item":
        pool = ("x" * (MAX_ITEM_CHARS + 1) + "\nb\nc\n").encode()
    if case == "empty_pool":
        pool = b"\n\n"
    if case == "duplicate_bins":
        domain = put(VALID, ("axes", 0, "bins"), [0.1, 0.5, 0.5, 0.9])
    if case == "equal_labels":
        domain = put(VALID, ("axes", 0, "labels"), ["big", "BIG "])
    (tmp_path / "pool.txt").write_bytes(pool)
    path = tmp_path / "toy.yaml"
    text = yaml.safe_dump(domain).encode()
    path.write_bytes(text + b"# \xff\xfe\n" if case == "non_utf8_domain" else text)
    with pytest.raises(DomainError, match=expected) as err:
        load_domain(path).check_files()
    assert one_line(str(err.value))


@SETTINGS
@given(field=st.sampled_from(sorted(RunConfig.model_fields) + ["no_such_field"]), value=json_values,
       top_level=st.booleans())
def test_generated_bad_run_configs_exit_2_with_one_line(field, value, top_level):
    config = {field: value} if top_level else value  # a config file that is not a JSON object at all, too
    if isinstance(config, dict):
        try:
            RunConfig.model_validate(config)
            assume(False)  # a valid config would start a run; only broken ones are the point here
        except ValidationError:
            pass
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.json"
        path.write_text(json.dumps(config))
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            status = main(["run", "--config", str(path)])
    assert status == 2
    assert one_line(err.getvalue()) and err.getvalue().startswith("evoforge: ")


def test_broken_config_json_exits_2_with_one_line(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"generations": 4,')
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["run", "--config", str(path)]) == 2
    assert one_line(err.getvalue())


@settings(max_examples=60, deadline=None)
@given(field=st.sampled_from(["generations", "batch_size", "experts", "seed", "search", "near_probability"]),
       value=st.one_of(st.text(max_size=5), st.integers(-5, 0), st.floats(-1, -0.01)))
def test_generated_bad_flow_parameters_name_the_field(field, value):
    """What the Prefect UI's form and the REST API send goes through the same validation."""
    from prefect.exceptions import ParameterTypeError

    from flows.evolution import evolution_run

    config = {field: value}
    try:
        RunConfig.model_validate(config)
        assume(False)
    except ValidationError:
        pass
    with pytest.raises(ParameterTypeError) as err:
        evolution_run.validate_parameters({"config": config})
    assert field in str(err.value)


def test_shipped_domains_pass_the_same_checks():
    for path in Path(load_domain("opinions").seed_pool).parents[1].joinpath("domains").glob("*.yaml"):
        assert isinstance(load_domain(path).check_files(), Domain)


@pytest.mark.parametrize("content,names", [
    ('{"seed": 3}', "--seed"),  # set by a flag of evaluate, not in the file
    ('{"judges": [{"name": "chat0", "kind": "no-such-kind"}]}', "judges"),
])
def test_evaluate_config_is_checked_before_any_work(tmp_path, content, names):
    path = tmp_path / "config.json"
    path.write_text(content)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        assert main(["evaluate", "--model", "smollm2", "--config", str(path)]) == 2
    assert one_line(err.getvalue()) and names in err.getvalue()
