"""A tiny real training run on the embedded model; the tuned checkpoint loads back as a backend."""

import pytest

from evoforge.core.config import FinetuneConfig
from models.finetune import chat_examples, mean_loss, split_held_out
from models.resolve import resolve_model

pytestmark = pytest.mark.slow

PAIRS = [
    ("Say something nice about carrots.", "Carrots are sweet, crunchy and bright orange."),
    ("Say something nice about peas.", "Peas are sweet, crunchy and bright green."),
    ("Say something nice about beets.", "Beets are sweet, earthy and deep red."),
    ("Say something nice about corn.", "Corn is sweet, crunchy and bright yellow."),
    ("Say something nice about kale.", "Kale is fresh, crunchy and dark green."),
    ("Say something nice about plums.", "Plums are sweet, juicy and deep purple."),
]


def test_lora_training_lowers_the_loss_and_the_checkpoint_loads_back(tmp_path):
    import pandas as pd

    from evoforge.training.finetuning import train_and_register
    from models.loading import load_backend
    from models.transformers_backend import TransformersBackend

    shared = load_backend("smollm2", "float32")  # the backend train_and_register trains from, shared by the process
    weights_before = {k: v.clone() for k, v in shared.model.state_dict().items() if "layers.0." in k}
    examples = chat_examples(shared.tokenizer, [p for p, _ in PAIRS], [c for _, c in PAIRS], max_length=96)
    assert all(ex.labels[0] == -100 for ex in examples)  # the prompt carries no loss
    train_set, _ = split_held_out(examples, 0.34, seed=0)
    before = mean_loss(shared.model, shared.tokenizer, train_set)

    settings = FinetuneConfig(epochs=2, train_batch_size=2, grad_accum=1, learning_rate=2e-3, patience=2,
                              eval_fraction=0.34)
    frame = pd.DataFrame({"prompt": [p for p, _ in PAIRS], "completion": [c for _, c in PAIRS]})
    outcome = train_and_register(frame, "smollm2", settings, tmp_path / "ft", tracker=None, register_as=None)
    history = outcome["history"]
    assert len(history) == 2 and history[1]["train_loss"] < history[0]["train_loss"]
    assert sorted(p.name for p in (tmp_path / "ft").iterdir()) == ["best", "epoch_00", "epoch_01"]
    # The shared backend is still the base model: not wrapped by LoRA, its weights untouched.
    assert shared.model.__class__.__name__ == "LlamaForCausalLM"
    assert all(v.equal(shared.model.state_dict()[k]) for k, v in weights_before.items())

    local = resolve_model(outcome["checkpoint"])
    assert local.adapter is not None and local.gguf_file is not None
    tuned = TransformersBackend(outcome["checkpoint"])
    assert mean_loss(tuned.model, tuned.tokenizer, train_set) < before - 0.1  # it learnt the training pairs
    assert mean_loss(tuned.model, tuned.tokenizer, outcome["held_out"]) == pytest.approx(outcome["held_out_loss"],
                                                                                          rel=1e-3)
