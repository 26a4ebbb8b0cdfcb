"""Weak reference labels: texts the generator writes at each pole of each axis, for a domain without references."""

from evoforge.core.domain import load_domain
from evoforge.judges.weak_labels import pole_prompt, pole_references


def test_pole_prompts_name_the_axis_and_its_pole():
    jaws = load_domain("jaws")
    axis = jaws.axes[0]
    assert pole_prompt(jaws, axis, 1.0).endswith("Write one whose sentiment is very positive. Reply with the text only.")
    assert "very negative" in pole_prompt(jaws, axis, 0.0) and pole_prompt(jaws, axis, 0.0).startswith(jaws.description)


def test_pole_references_are_labelled_by_the_pole_asked_for_in_the_references_shape(backend):
    stories = load_domain("stories")  # two axes: each text is labelled on its own axis only
    refs = pole_references(backend, stories, per_pole=2, max_new_tokens=12, seed=0)
    assert list(refs.columns) == ["text", "quality", *stories.axis_names]
    assert refs["quality"].isna().all() and (refs["text"].str.len() > 0).all()
    assert (refs[stories.axis_names].notna().sum(axis=1) == 1).all()  # each text is labelled on its own axis only
    for axis in stories.axis_names:
        assert set(refs[axis].dropna()) == {0.0, 1.0}
    assert len(refs) >= 6  # 2 per pole x 2 poles x 2 axes, an empty text dropped at most here and there
