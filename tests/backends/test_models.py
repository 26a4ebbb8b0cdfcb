"""The real embedded models: SmolLM2-135M-Instruct (GGUF) and all-MiniLM-L6-v2, loaded once per session."""

import re
import time

import numpy as np
import torch
import pytest

from evoforge.core.config import JudgeConfig
from models.backend import SamplingSettings
from evoforge.judges.panel import domain_columns, first_label_probability, fit_panel, judge_texts, question_prompts, questions
from evoforge.core.prompts import few_shot_prompt
from models.resolve import ModelNotFoundError, resolve_model

pytestmark = pytest.mark.slow

COMMON_WORDS = {"the", "a", "i", "and", "to", "of", "is", "it", "in", "my", "me", "you", "that", "for", "are", "they", "but", "not", "be", "with", "like", "eat", "food", "vegetables"}


def test_unknown_model_fails_fast_with_a_hint(tmp_path):
    started = time.perf_counter()
    with pytest.raises(ModelNotFoundError, match="was not found locally.*local Hugging Face model folder"):
        resolve_model("HuggingFaceTB/SmolLM2-1.7B-Instruct")
    with pytest.raises(ModelNotFoundError):
        resolve_model(str(tmp_path))  # an empty folder
    assert time.perf_counter() - started < 1.0  # no download attempt, no hang


def test_generation_is_coherent_english_with_per_row_budgets(backend, opinions):
    pool = opinions.load_pool()
    g = opinions.generator
    prompts = [few_shot_prompt(g.system_prompts[0], g.template, pool[i : i + 3], g.separator) for i in range(6)]
    budgets = [8, 12, 16, 20, 24, 28]
    outs = backend.generate(prompts, [SamplingSettings(0.8, 0.95, 0.2, 0.2, b) for b in budgets], stop=["###"], seed=0)
    assert len(outs) == 6
    assert all(0 < o.new_tokens <= b for o, b in zip(outs, budgets))
    words = [w for o in outs for w in re.findall(r"[A-Za-z']+", o.text.lower())]
    # An untied output layer writes subword soup; real English is full of common words.
    assert len(words) >= 20 and sum(w in COMMON_WORDS for w in words) / len(words) > 0.2


def test_same_seed_same_text(backend):
    settings = [SamplingSettings(1.0, 1.0, 0.0, 0.0, 10)]
    a = backend.generate(["Once upon a time"], settings, seed=7)
    b = backend.generate(["Once upon a time"], settings, seed=7)
    assert a == b


def test_single_token_shortcut_matches_full_scoring(exact_backend):
    exact = exact_backend  # float32: the two paths agree to rounding on every CPU
    prompts = [exact.chat_prompt("Is the sky blue? Answer yes or no."), exact.chat_prompt("Is fire cold? Answer yes or no.")]
    fast = exact.option_logprobs(prompts, ["yes", "no"])  # single tokens: one row per prompt
    full = exact.option_logprobs(prompts, ["yes", "no", "maybe not"])  # multi-token: one row per pair
    assert np.allclose(fast, full[:, :2], atol=1e-4)
    assert (fast < 0).all()


def test_scoring_reads_the_same_numbers_as_a_full_forward_pass(exact_backend):
    """option_logprobs sends only the positions it reads through the output layer (logits_to_keep); in float32
    that gives what a plain forward pass over every position gives, for single- and multi-token options."""
    exact = exact_backend
    prompts = [exact.chat_prompt("Is the sky blue? Answer yes or no."), "The weather today is"]
    options = ["yes", " sunny and warm"]
    got = exact.option_logprobs(prompts, options, reuse_prefix=False)
    tok = exact.tokenizer
    with torch.inference_mode():
        for i, prompt in enumerate(prompts):
            ids = tok(prompt, add_special_tokens=False)["input_ids"]
            for k, option in enumerate(options):
                option_ids = tok(option, add_special_tokens=False)["input_ids"]
                full = exact.model(input_ids=torch.tensor([ids + option_ids])).logits[0].float().log_softmax(-1)
                want = sum(full[len(ids) - 1 + j, t].item() for j, t in enumerate(option_ids))
                assert abs(got[i, k] - want) < 1e-3, (prompt, option)


def test_bfloat16_paths_agree_within_what_every_bf16_cpu_rounds_to(backend):
    """In the precision runs use (bfloat16 on BF16 CPUs), the two paths agree only to the kernels' rounding, which
    differs between AMX and AVX-512 BF16 CPUs (measured up to 0.06 nats on AMX); what a judge reports, the
    softmax over its options, must still agree closely."""
    prompts = [backend.chat_prompt("Is the sky blue? Answer yes or no."), backend.chat_prompt("Is fire cold? Answer yes or no.")]
    fast = backend.option_logprobs(prompts, ["yes", "no"])
    full = backend.option_logprobs(prompts, ["yes", "no", "maybe not"])[:, :2]
    assert np.allclose(fast, full, atol=0.25)
    assert np.allclose(first_label_probability(fast), first_label_probability(full), atol=0.1)


def test_judge_log_odds_are_not_rounded_to_a_few_levels(backend, opinions):
    """The read positions go through the output layer in float32 even when the model runs in bfloat16: bfloat16
    logits moved a judge's log-odds in steps of 1/16, which left 13 distinct values over 200 texts (jaws), and a
    calibration that stretches them left a handful of reachable cells."""
    texts = opinions.load_references()["text"].tolist()[:40]
    prompts = [backend.chat_prompt(f"Is the following text positive? Answer yes or no.\n\n{t}") for t in texts]
    logprobs = backend.option_logprobs(prompts, ["yes", "no"])
    log_odds = logprobs[:, 0] - logprobs[:, 1]
    assert len(np.unique(np.round(log_odds, 4))) >= 36


def test_precision_auto_follows_the_cpu_flags():
    """auto picks bfloat16 only where the CPU has BF16 units; an AVX2-only CPU gets the float32 path."""
    from models.devices import resolve_precision

    avx2_only = "flags\t\t: fpu sse sse2 avx avx2 fma f16c"
    assert resolve_precision("auto", "cpu", cpuinfo=avx2_only) == "float32"
    assert resolve_precision("auto", "cpu", cpuinfo=avx2_only + " avx512f avx512_bf16") == "bfloat16"
    assert resolve_precision("auto", "cpu", cpuinfo=avx2_only + " amx_tile amx_bf16") == "bfloat16"
    assert resolve_precision("float32", "cpu", cpuinfo=avx2_only + " amx_bf16") == "float32"


def test_judge_ranks_a_positive_opinion_above_a_negative_one(backend, opinions):
    texts = [
        "I absolutely love vegetables! Fresh salads and roasted carrots make me happy and healthy every day.",
        "I hate vegetables. Broccoli is disgusting and plant-based food makes me miserable.",
    ]
    judges = [JudgeConfig(name="chat0", phrasing=0), JudgeConfig(name="chat1", phrasing=1)]
    scores = judge_texts({"smollm2": backend}, judges, questions(opinions), texts)
    for judge in ("chat0", "chat1"):
        positive, negative = scores[f"judge_{judge}_sentiment"]
        assert positive > negative
    assert scores.to_numpy().min() >= 0 and scores.to_numpy().max() <= 1


def test_chat_and_instruct_prompts(backend, opinions):
    chat = question_prompts(backend, JudgeConfig(name="c", format="chat"), opinions.quality, ["Text one."])
    assert "<|im_start|>assistant" in chat.prompts[0] and chat.options == ("yes", "no")
    inst = question_prompts(backend, JudgeConfig(name="i", format="instruct"), opinions.quality, ["Text one."])
    assert inst.prompts[0].endswith("### Response:") and inst.options == (" yes", " no")
    assert first_label_probability(backend.option_logprobs(inst.prompts, list(inst.options))).shape == (1,)


def test_embedder_puts_paraphrases_closer_than_unrelated_text(embedder):
    e = embedder.embed(["I love eating carrots.", "Carrots are my favourite food.", "The stock market fell today."])
    assert e.shape == (3, 384)
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert e[0] @ e[1] > e[0] @ e[2]


def test_shared_prefix_reuse_gives_the_same_scores(exact_backend, opinions):
    exact = exact_backend  # float32: the two paths agree to rounding
    texts = opinions.load_pool()[:5]
    for question in (opinions.quality, opinions.axes[0]):
        qp = question_prompts(exact, JudgeConfig(name="c"), question, texts)
        reused = exact.option_logprobs(qp.prompts, list(qp.options), score_batch_size=2)
        plain = exact.option_logprobs(qp.prompts, list(qp.options), score_batch_size=2, reuse_prefix=False)
        assert np.allclose(reused, plain, atol=1e-3)
    multi = exact.option_logprobs(qp.prompts, ["positive", "quite negative"])  # multi-token rows share it too
    assert np.allclose(multi, exact.option_logprobs(qp.prompts, ["positive", "quite negative"], reuse_prefix=False), atol=1e-3)


def test_calibration_on_reference_labels_fixes_the_biased_sentiment_judge(backend, opinions):
    """The raw 135M judge ranks sentiment well but says 'positive' to nearly everything; Platt scaling fitted on
    the shipped reference labels (scored out of fold) turns the ranking into right answers."""
    judges = [JudgeConfig(name="chat0", phrasing=0, calibration="platt"),
              JudgeConfig(name="chat1", phrasing=1, calibration="platt")]
    references = opinions.load_references()
    panel = fit_panel({"smollm2": backend}, judges, questions(opinions), "stacking", references,
                      domain_columns(opinions))
    report = panel.report.set_index(["question", "name"])
    chat0 = report.loc[("sentiment", "chat0")]
    assert chat0["auc_raw"] > 0.85  # the ranking is informative
    assert chat0["accuracy"] > chat0["accuracy_raw"] + 0.2  # and calibration turns it into right answers
    assert {f"combine:{m}" for m in ("mean", "weighted", "vote", "bma", "stacking")} <= set(report.loc["sentiment"].index)
    assert report.loc[("sentiment", "combine:stacking"), "accuracy"] > 0.8
    scored = panel.judge({"smollm2": backend}, references["text"].tolist()[:4])
    assert {"raw_chat0_sentiment", "judge_chat0_sentiment", "measure_sentiment", "quality"} <= set(scored.columns)
    assert scored["measure_sentiment"].between(0, 1).all()


class GarbageJudgeBackend:
    """Fault injection: a judge backend whose written answers never contain a valid score."""

    def __init__(self, real):
        self.real = real
        self.calls = 0

    def chat_prompt(self, user, system=None):
        return self.real.chat_prompt(user, system)

    def generate(self, prompts, settings, stop=None, seed=None, desc=""):
        from models.backend import Generation

        self.calls += 1
        return [Generation("I think it is quite good!", 6) for _ in prompts]


def test_judge_kinds_label_and_a_generative_judge_that_always_fails(backend, opinions):
    texts = ["I love vegetables, they are delicious.", "I hate vegetables, they taste awful."]
    label = judge_texts({"smollm2": backend}, [JudgeConfig(name="lab", kind="label")], questions(opinions), texts)
    assert set(np.unique(label.to_numpy())) <= {0.0, 1.0}
    garbage = GarbageJudgeBackend(backend)
    judges = [JudgeConfig(name="gen", kind="generative", model="garbage"), JudgeConfig(name="lp")]
    panel = fit_panel({"garbage": garbage, "smollm2": backend}, judges, questions(opinions), "mean",
                      columns=domain_columns(opinions))
    scored = panel.judge({"garbage": garbage, "smollm2": backend}, texts)
    assert scored["judge_gen_sentiment"].isna().all()  # recorded as failed, not as zero
    assert garbage.calls == 2 * 3  # two questions, each asked once and retried twice
    assert scored["measure_sentiment"].tolist() == scored["judge_lp_sentiment"].tolist()  # the panel goes on without it
