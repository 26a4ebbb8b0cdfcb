"""A tiny real training run on the embedded model; the tuned checkpoint loads back as a backend."""

import pytest

from evoforge.config import FinetuneConfig
from models.finetune import chat_examples, mean_loss, split_held_out, train
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
    import copy

    from models.loading import load_backend
    from models.transformers_backend import TransformersBackend

    backend = load_backend("smollm2", "float32")  # training runs in float32 (the copy finetune_model uses too)

    examples = chat_examples(backend.tokenizer, [p for p, _ in PAIRS], [c for _, c in PAIRS], max_length=96)
    assert all(ex.labels[0] == -100 for ex in examples)  # the prompt carries no loss
    train_set, held_out = split_held_out(examples, 0.34, seed=0)
    settings = FinetuneConfig(epochs=2, train_batch_size=2, grad_accum=1, learning_rate=2e-3, patience=2)
    model = copy.deepcopy(backend.model)
    before = mean_loss(model, backend.tokenizer, train_set)
    model, result = train(model, backend.tokenizer, train_set, held_out, settings, tmp_path / "ft", "smollm2")
    after = mean_loss(model, backend.tokenizer, train_set)
    assert after < before - 0.1
    assert len(result.history) == 2 and result.history[1]["train_loss"] < result.history[0]["train_loss"]
    assert sorted(p.name for p in (tmp_path / "ft").iterdir()) == ["best", "epoch_00", "epoch_01"]
    assert backend.model.__class__.__name__ == "LlamaForCausalLM"  # the shared model was not wrapped

    local = resolve_model(str(result.best_checkpoint))
    assert local.adapter is not None and local.gguf_file is not None
    tuned = TransformersBackend(str(result.best_checkpoint))
    assert mean_loss(tuned.model, tuned.tokenizer, held_out) == pytest.approx(result.best_eval_loss, rel=1e-3)
