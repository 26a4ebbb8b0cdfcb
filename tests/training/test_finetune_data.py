import json
from pathlib import Path

import pandas as pd
import pytest

from evoforge.training.evaluate import comparison_table, promote
from evoforge.core.niches import axis_phrase, bin_centre, niche_prompt
from evoforge.training.finetune_data import elite_examples, write_examples
from evoforge.training.finetuning import DatasetNotFoundError, dataset_files, load_local_dataset


def test_niche_prompts_name_the_niche(opinions):
    axis = opinions.axes[0]
    assert axis_phrase(axis, 0.99) == "very positive" and axis_phrase(axis, 0.1) == "clearly negative"
    assert axis_phrase(axis, 0.4) == "somewhat negative"
    assert bin_centre(axis, 0) == pytest.approx(0.0025) and bin_centre(axis, 19) == pytest.approx(0.9975)
    assert "sentiment is very negative" in niche_prompt(opinions, [0])
    assert "sentiment is very positive" in niche_prompt(opinions, [19])


def test_each_elite_becomes_one_chat_example(opinions, tmp_path):
    elites = pd.DataFrame({"cid": [4, 9], "text": ["I love kale.", "Beans are awful."], "quality": [0.9, 0.7],
                           "cell": [18, 1], "bin_sentiment": [18, 1], "measure_sentiment": [0.99, 0.007]})
    examples = elite_examples(elites, opinions)
    assert examples["completion"].tolist() == ["I love kale.", "Beans are awful."]
    assert "very positive" in examples["prompt"][0] and "very negative" in examples["prompt"][1]
    parquet, jsonl = write_examples(examples, tmp_path)
    assert pd.read_parquet(parquet).equals(examples)
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [m["role"] for m in lines[0]["messages"]] == ["user", "assistant"]
    assert lines[1]["messages"][1]["content"] == "Beans are awful."


def test_every_candidate_that_entered_the_archive_is_an_example(opinions):
    from evoforge.core.archive import QDArchive
    from evoforge.training.finetune_data import ever_elites

    archive = QDArchive(opinions.axis_names, [a.bins for a in opinions.axes])
    candidates = pd.DataFrame({"cid": [0, 1, 2, 3], "text": ["a", "b", "b", "c"], "quality": [0.5, 0.6, 0.6, 0.1],
                               "measure_sentiment": [0.3, 0.7, 0.7, 0.999], "inserted": [True, True, True, False]})
    elites = ever_elites(candidates, archive)
    assert elites["text"].tolist() == ["a", "b"] and elites["bin_sentiment"].tolist() == [9, 10]


def test_promotion_needs_a_margin_and_no_loss_of_quality():
    champion = {"qd_score": 10.0, "mean_quality": 0.8}
    assert promote({"qd_score": 10.5, "mean_quality": 0.8}, champion, margin=0.02)[0]
    assert not promote({"qd_score": 10.1, "mean_quality": 0.9}, champion, margin=0.02)[0]  # inside the margin
    ok, reason = promote({"qd_score": 12.0, "mean_quality": 0.7}, champion, margin=0.02)
    assert not ok and "mean quality" in reason
    assert not promote({"qd_score": 10.0, "mean_quality": 0.9}, champion, margin=0.0)[0]  # a tie does not win
    assert promote({"qd_score": 0.5, "mean_quality": 0.5}, {"qd_score": 0.0, "mean_quality": 0.0}, margin=0.5)[0]


def test_comparison_table_has_one_column_per_arm():
    arms = [{"label": "candidate", "model": "/x/best", "search": "niche", "scores": {"qd_score": 1.5, "coverage": 0.1}},
            {"label": "champion", "model": "smollm2", "search": "niche", "scores": {"qd_score": 1.0, "coverage": 0.05}}]
    table = comparison_table(arms).splitlines()
    assert table[0].startswith("| score | candidate") and "champion" in table[0]
    assert table[2] == "| qd_score | 1.5 | 1 |" and table[3] == "| coverage | 0.1 | 0.05 |"


def test_a_hub_name_gets_a_clear_offline_error():
    with pytest.raises(DatasetNotFoundError, match="hubs cannot be reached.*pass a local path"):
        dataset_files("HuggingFaceTB/smoltalk")


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet", ".txt"])
def test_local_data_sets_load_with_datasets(tmp_path, suffix):
    texts = ["first line of text", "second line of text"]
    path = tmp_path / f"data{suffix}"
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    elif suffix == ".parquet":
        pd.DataFrame({"text": texts}).to_parquet(path)
    else:
        path.write_text("\n".join(texts) + "\n")
    frame = load_local_dataset(str(tmp_path))  # a folder of one kind of file
    assert frame["text"].tolist() == texts


def test_full_finetuning_of_a_packed_gguf_model_is_refused_with_the_way_out():
    import pandas as pd

    from evoforge.core.config import FinetuneConfig
    from evoforge.training.finetuning import train_and_register

    frame = pd.DataFrame({"text": ["a", "b"]})
    with pytest.raises(ValueError, match="method='full' cannot train 'smollm2'.*method='lora'"):
        train_and_register(frame, "smollm2", FinetuneConfig(method="full"), Path("/nonexistent"), None, None)
