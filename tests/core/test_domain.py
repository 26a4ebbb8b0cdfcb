import pytest

from evoforge.core.domain import DomainError, load_domain

BASE = """
name: toy
generator:
  template: "Here is a toy:"
  system_prompts: ["Toys."]
seed_pool: pool.txt
quality:
  labels: ["yes", "no"]
  instructions: ["Is it a toy?"]
axes:
  - name: size
    labels: ["big", "small"]
    instructions: ["Big or small?"]
    bins: [0.1, 0.5, 0.9]
"""


def write_domain(tmp_path, text, pool="a\nb\nc\n"):
    (tmp_path / "pool.txt").write_text(pool)
    path = tmp_path / "toy.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name,shape", [("opinions", (20,)), ("stories", (10, 10)), ("jaws", (20,))])
def test_shipped_domains_load_with_published_grids(name, shape):
    domain = load_domain(name)
    assert domain.grid_shape == shape
    assert len(domain.load_pool()) >= 10
    # Three phrasings: the run's two judges ask 0 and 1; the science benchmark's held-out judge asks 2.
    assert len(domain.quality.instructions) >= 3 and all(len(a.instructions) >= 3 for a in domain.axes)


def test_the_jaws_domain_ships_without_reference_labels():
    assert load_domain("jaws").references is None and load_domain("jaws").load_references() is None


def test_valid_toy_domain(tmp_path):
    domain = load_domain(write_domain(tmp_path, BASE))
    assert domain.axis_names == ["size"]
    assert domain.load_pool() == ["a", "b", "c"]


@pytest.mark.parametrize(
    "broken,field,expected",
    [
        ("bins: [0.1, 0.5, 0.9]", "axes.0.bins", "strictly increasing"),
        ("bins: [0.1, 0.5, 1.5]", "axes.0.bins", "strictly between 0 and 1"),
        ('labels: ["big", "small"]', "axes.0.labels", "two different"),
    ],
)
def test_broken_axis_names_file_field_and_expectation(tmp_path, broken, field, expected):
    replacement = {
        "bins: [0.1, 0.5, 0.9]": "bins: [0.5, 0.1, 0.9]",
        "bins: [0.1, 0.5, 1.5]": "bins: [0.1, 0.5, 1.5]",
        'labels: ["big", "small"]': 'labels: ["big", "Big"]',
    }[broken]
    text = BASE.replace("bins: [0.1, 0.5, 0.9]", replacement) if "bins" in broken else BASE.replace(broken, replacement)
    path = write_domain(tmp_path, text)
    with pytest.raises(DomainError) as err:
        load_domain(path)
    message = str(err.value)
    assert str(path) in message and f"'{field}'" in message and expected in message


def test_missing_field_is_named(tmp_path):
    path = write_domain(tmp_path, BASE.replace('  template: "Here is a toy:"\n', ""))
    with pytest.raises(DomainError, match=r"toy\.yaml: field 'generator\.template': Field required"):
        load_domain(path)


def test_unknown_key_is_rejected(tmp_path):
    path = write_domain(tmp_path, BASE + "colour: blue\n")
    with pytest.raises(DomainError, match="field 'colour'"):
        load_domain(path)


def test_bad_yaml_and_unknown_name(tmp_path):
    with pytest.raises(DomainError, match="not valid YAML"):
        load_domain(write_domain(tmp_path, "name: [unclosed"))
    with pytest.raises(DomainError, match=r"unknown domain 'nope': expected one of \['jaws', 'opinions', 'stories'\]"):
        load_domain("nope")


def test_small_pool_is_an_error(tmp_path):
    domain = load_domain(write_domain(tmp_path, BASE, pool="only one\n"))
    with pytest.raises(DomainError, match="at least 3 items"):
        domain.load_pool()


def test_reference_labels_load_and_bad_values_name_column_and_line(tmp_path):
    from evoforge.core.domain import DOMAINS_DIR, DomainError, load_domain

    references = load_domain("opinions").load_references()
    assert list(references.columns) == ["text", "quality", "sentiment"]
    assert set(references["sentiment"].dropna()) == {0.0, 1.0} and references["sentiment"].isna().any()
    bad = tmp_path / "refs.csv"
    bad.write_text("text,quality,sentiment\nI like peas.,1,1\nI hate peas.,1,negative\n")
    text = (DOMAINS_DIR / "opinions.yaml").read_text().replace("../references/opinions.csv", str(bad))
    text = text.replace("../pools/opinions.txt", str(DOMAINS_DIR.parent / "pools" / "opinions.txt"))
    (tmp_path / "d.yaml").write_text(text)
    with pytest.raises(DomainError, match="column 'sentiment' line 3"):
        load_domain(tmp_path / "d.yaml").load_references()
