"""Bad merge requests get one clear error naming the field and the fix, from the CLI before any server starts.

The parents here are adapter folders as the trainer writes them (adapter_config.json and the base model's name);
checking a request reads only those, so no weights are needed.
"""

import json

import pytest

from app.cli import main
from models.resolve import BASE_FILE


def adapter_folder(root, name: str, base_model: str = "smollm2", adapter: bool = True):
    folder = root / name
    folder.mkdir()
    if adapter:
        (folder / "adapter_config.json").write_text(json.dumps({"r": 8, "peft_type": "LORA"}))
    (folder / BASE_FILE).write_text(json.dumps({"base_model": base_model, "method": "lora"}))
    return str(folder)


def refused(capsys, *argv) -> str:
    assert main(["merge", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("evoforge: ") and "\n" not in err and "Traceback" not in err
    return err


def test_bad_merge_requests_name_the_field_and_the_fix(tmp_path, capsys):
    a, b = adapter_folder(tmp_path, "a"), adapter_folder(tmp_path, "b")
    other_base = adapter_folder(tmp_path, "other", base_model="minilm")
    full = tmp_path / "full"
    full.mkdir()
    (full / "config.json").write_text("{}")  # a Hugging Face model folder, not an adapter

    err = refused(capsys, "--models", a, str(tmp_path / "missing"))
    assert "models[1]" in err and "was not found locally" in err
    err = refused(capsys, "--models", a, other_base)
    assert "different base models" in err and "models[1] on 'minilm'" in err and "same --base-model" in err
    err = refused(capsys, "--models", a, str(full))
    assert "models[1]" in err and "not a LoRA adapter" in err and "'lora'" in err
    err = refused(capsys, "--models", a)
    assert "models: got 1" in err and "two or more" in err
    err = refused(capsys, "--models", a, b, "--weights", "0.2", "0.3", "0.5")
    assert "weights: 3 weights for 2 models" in err and "one weight per model" in err
    err = refused(capsys, "--models", a, b, "--weights", "0", "0")
    assert "weights: all are zero" in err
    err = refused(capsys, "--models", a, b, "--density", "1.5")
    assert "--density" in err
    with pytest.raises(SystemExit):  # argparse: an unknown method is a usage error naming the choices
        main(["merge", "--models", a, b, "--method", "average"])
    assert "invalid choice: 'average'" in capsys.readouterr().err


def test_a_good_request_resolves_to_one_base_and_the_adapters(tmp_path):
    from evoforge.core.config import MergeConfig
    from evoforge.training.merging import merge_weights, parent_adapters

    a, b, c = (adapter_folder(tmp_path, n) for n in "abc")
    base, adapters = parent_adapters([a, b, c], MergeConfig(weights=[0.5, 0.25, 0.25]))
    assert base == "smollm2" and [p.name for p in adapters] == ["a", "b", "c"]
    assert merge_weights([a, b, c], MergeConfig()) == pytest.approx([1 / 3] * 3)
