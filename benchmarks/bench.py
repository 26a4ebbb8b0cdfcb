"""evoforge benchmarks: each fast path beside its baseline, measured in the same process run.

    make bench                 # or: .venv/bin/python benchmarks/bench.py [--quick] [--only generation judging ...]

Prints one table (median seconds, throughput, ratio to the baseline of its group) and the machine, and writes
the rows as JSON to benchmarks/results/<date>-<host>.json. Targets are checked here, never in timed tests.
"""

import argparse
import contextlib
import copy
import json
import os
import statistics
import sys
import tempfile
import time
import tracemalloc
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TQDM_DISABLE", "1")

import torch  # noqa: E402

from benchmarks.machine import machine_info  # noqa: E402
from evoforge.core.config import JudgeConfig  # noqa: E402
from evoforge.core.domain import load_domain  # noqa: E402
from evoforge.core.experts import SamplingRanges
from models.backend import SamplingSettings  # noqa: E402
from evoforge.judges.panel import first_label_probability, generative_scores, question_prompts  # noqa: E402
from evoforge.core.prompts import few_shot_prompt  # noqa: E402

ROWS: list[dict] = []


def timed(fn, repeats: int, warmup: int = 1) -> tuple[float, object]:
    """Median seconds over `repeats` calls after `warmup` calls, and the last result."""
    for _ in range(warmup):
        result = fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def record(group: str, variant: str, seconds: float, amount: float, unit: str, baseline: str | None = None, **extra):
    row = {"group": group, "variant": variant, "median_s": seconds, "throughput": amount / seconds, "unit": unit,
           "baseline": baseline, **extra}
    ROWS.append(row)
    base = next((r for r in ROWS if r["group"] == group and r["variant"] == baseline), None)
    row["ratio"] = row["throughput"] / base["throughput"] if base else 1.0
    notes = "  ".join(f"{k}={v:.3g}" for k, v in extra.items() if isinstance(v, float))
    print(f"  {group:<28} {variant:<30} {seconds:9.3f} s {row['throughput']:12.1f} {unit:<14} x{row['ratio']:<6.2f} {notes}", flush=True)


# --- 1. generation ---------------------------------------------------------------------------------------------


def expert_prompts(domain, n_experts: int, per_expert: int, new_tokens: int, seed: int = 0):
    """N experts x M candidates: each expert its own sampling settings, each candidate its own few-shot prompt."""
    rng = np.random.default_rng(seed)
    pool = domain.load_pool()
    ranges = SamplingRanges(max_new_tokens=(new_tokens, new_tokens))
    settings, prompts = [], []
    for _ in range(n_experts):
        s = ranges.draw(rng)
        for _ in range(per_expert):
            items = [pool[i] for i in rng.choice(len(pool), 3, replace=False)]
            prompts.append(few_shot_prompt(domain.generator.system_prompts[0], domain.generator.template, items, "\n###\n"))
            settings.append(s)
    return prompts, settings


def bench_generation(backends: dict, domain, quick: bool):
    new_tokens = 24 if quick else 32
    sizes = [(4, 4)] if quick else [(4, 4), (8, 8)]
    for n, m in sizes:
        group = f"generate {n}x{m}={n * m}"
        prompts, settings = expert_prompts(domain, n, m, new_tokens)
        fp32 = backends["float32"]
        # (a) naive: one generate call per candidate; timed on a subset, its rate is per token
        subset = 4 if quick else 6
        secs, outs = timed(lambda: [fp32.generate([p], [s], seed=0)[0] for p, s in zip(prompts[:subset], settings[:subset])], 1, 0)
        record(group, "naive (1 call/candidate)", secs, sum(o.new_tokens for o in outs), "new tok/s", None, candidates=subset)

        def per_expert(backend):
            outs = []
            for e in range(n):
                rows = slice(e * m, (e + 1) * m)
                outs += backend.generate(prompts[rows], settings[rows], seed=0)
            return outs

        secs, outs = timed(lambda: per_expert(fp32), 1, 0)
        record(group, "per expert (1 call/expert)", secs, sum(o.new_tokens for o in outs), "new tok/s", "naive (1 call/candidate)")
        for precision, backend in backends.items():
            secs, outs = timed(lambda: backend.generate(prompts, settings, seed=0), 1 if quick else 2, 1)
            record(group, f"batched {precision}", secs, sum(o.new_tokens for o in outs), "new tok/s", "naive (1 call/candidate)")
        bench_llama_cpp(group, prompts[:subset], settings[:subset])


def bench_llama_cpp(group: str, prompts: list[str], settings: list):
    """The same GGUF file in llama.cpp (llama-cpp-python, optional: it builds from source here, see README), one
    sequence at a time with each row's own sampling settings, on the naive path's prompts."""
    try:
        from llama_cpp import Llama
    except ImportError:
        print(f"  {group:<28} llama.cpp: not installed (optional), skipped")
        return
    from models.resolve import resolve_model

    llm = _llama_cpp_model(Llama, resolve_model("smollm2"))

    def run():
        outs = []
        for prompt, s in zip(prompts, settings):
            out = llm.create_completion(prompt, max_tokens=s.max_new_tokens, temperature=s.temperature, top_p=s.top_p,
                                        frequency_penalty=s.frequency_penalty, presence_penalty=s.presence_penalty, seed=0)
            outs.append(out["usage"]["completion_tokens"])
        return outs

    secs, tokens = timed(run, 1, 1)
    record(group, "llama.cpp (1 call/candidate)", secs, sum(tokens), "new tok/s", "naive (1 call/candidate)")


_LLAMA = {}


def _llama_cpp_model(Llama, resolved):
    if "model" not in _LLAMA:
        _LLAMA["model"] = Llama(model_path=resolved.label, n_ctx=2048, n_threads=torch.get_num_threads(), verbose=False)
    return _LLAMA["model"]


def bench_decode_bound(backends: dict, domain, quick: bool):
    """What bounds decoding: the model's own forward pass for one new token at batch B, with a prefilled KV
    cache and nothing else (no sampling, no stopping criteria). B / step time is the most any generate() loop
    can reach with this model in this process. Beside the default (bfloat16, transformers' dynamic cache): a
    static cache, the same compiled with torch.compile, PyTorch's dynamic int8 quantisation, and llama.cpp's own
    batched decoding of the same GGUF; and where one step's time goes, by op kind."""
    backend = backends["bfloat16"]
    for batch in ([16] if quick else [16, 64]):
        prompts, _ = expert_prompts(domain, 1, batch, 8)
        tok = backend.tokenizer
        tok.padding_side = "left"
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        steps = 8 if quick else 16
        group = f"decode bound, batch {batch}"
        record_step = lambda variant, secs, base=None, **extra: record(  # noqa: E731
            group, variant, secs, steps * batch, "new tok/s", base, ms_per_step=1000 * secs / steps, **extra)
        secs = median_of(decode_loop(backend.model, enc, steps, "dynamic"))
        record_step("forward pass only", secs)
        if batch == 16:
            ROWS[-1]["profile_ms_per_step"] = decode_profile(backend.model, enc)
            print("  " + ", ".join(f"{k} {v:.1f} ms" for k, v in ROWS[-1]["profile_ms_per_step"].items()))
        secs = median_of(decode_loop(backend.model, enc, steps, "static"))
        record_step("static KV cache", secs, "forward pass only")
        if not quick and batch == 16:
            started = time.perf_counter()
            compiled = torch.compile(backend.model.forward, dynamic=False)
            loop = decode_loop(backend.model, enc, steps, "static", forward=compiled)
            loop()  # compiles (inductor, C++ on the CPU)
            compile_s = time.perf_counter() - started
            secs = median_of(loop)
            record_step("static cache + torch.compile", secs, "forward pass only", compile_s=compile_s)
            int8 = torch.ao.quantization.quantize_dynamic(copy.deepcopy(backends["float32"].model), {torch.nn.Linear},
                                                          dtype=torch.qint8)
            secs = median_of(decode_loop(int8, enc, steps, "dynamic"))
            record_step("dynamic int8 (from float32)", secs, "forward pass only",
                        kl_vs_float32=next_token_kl(backends["float32"].model, int8, enc),
                        kl_bfloat16_vs_float32=next_token_kl(backends["float32"].model, backend.model, enc))
        llama = llama_cpp_batched(batch, steps)
        if llama:
            record_step("llama.cpp batched decode (same GGUF)", llama["ms_per_step"] * steps / 1000, "forward pass only",
                        prefill_s=llama["prefill_s"])


def prefilled(model, enc, steps: int, cache: str):
    """The prompt's KV cache (`dynamic`: transformers' growing one; `static`: preallocated for `steps` more), the
    first greedy tokens and the attention mask for the steps to come."""
    from transformers import DynamicCache, StaticCache

    batch, length = enc["input_ids"].shape
    kv = StaticCache(config=model.config, max_cache_len=length + steps) if cache == "static" else DynamicCache()
    mask = torch.cat([enc["attention_mask"], torch.ones((batch, steps), dtype=torch.long)], dim=1)
    out = model(input_ids=enc["input_ids"], attention_mask=mask[:, :length], past_key_values=kv,
                cache_position=torch.arange(length), use_cache=True)
    return kv, out.logits[:, -1:].argmax(-1), mask


def decode_steps(forward, kv, next_ids, mask, start: int, steps: int) -> None:
    """`steps` greedy one-token forward passes after position `start`."""
    static = getattr(kv, "is_compileable", False)  # transformers marks its static caches so
    for position in range(start, start + steps):
        # A static cache takes the whole mask (one shape for every step, so a compiled forward compiles once);
        # a dynamic one the mask up to the new token.
        out = forward(input_ids=next_ids, attention_mask=mask if static else mask[:, : position + 1],
                      past_key_values=kv, cache_position=torch.tensor([position]), use_cache=True)
        next_ids = out.logits[:, -1:].argmax(-1)


def decode_loop(model, enc, steps: int, cache: str, forward=None):
    """A function that prefills `enc`, runs `steps` decode steps and returns the seconds the steps took (prefill
    not counted)."""

    @torch.inference_mode()
    def decode_seconds():
        kv, next_ids, mask = prefilled(model, enc, steps, cache)
        started = time.perf_counter()
        decode_steps(forward or model.forward, kv, next_ids, mask, enc["input_ids"].shape[1], steps)
        return time.perf_counter() - started

    return decode_seconds


def median_of(loop, repeats: int = 2) -> float:
    """Median decode seconds of a `decode_loop` over `repeats` calls (each prefills anew; prefill is not timed)."""
    return statistics.median(loop() for _ in range(repeats))


def decode_profile(model, enc) -> dict[str, float]:
    """Milliseconds per decode step by op kind (torch profiler, 4 steps): where one step's time goes."""
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode():
        kv, next_ids, mask = prefilled(model, enc, 5, "dynamic")
        decode_steps(model.forward, kv, next_ids, mask, enc["input_ids"].shape[1], 1)  # warm
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            decode_steps(model.forward, kv, next_ids, mask, enc["input_ids"].shape[1] + 1, 4)
    kinds = {"matmul (linear layers)": ("aten::mm", "aten::addmm"),
             "attention": ("aten::_scaled_dot_product_flash_attention_for_cpu",),
             "KV cache growth (cat)": ("aten::cat",)}
    events = prof.key_averages()
    out = {k: sum(e.self_cpu_time_total for e in events if e.key in names) / 4000 for k, names in kinds.items()}
    total = sum(e.self_cpu_time_total for e in events) / 4000
    out["everything else (norms, rotary, small ops)"] = total - sum(out.values())
    out["total"] = total
    return out


def next_token_kl(reference, model, enc) -> float:
    """Mean KL(reference || model) of the next-token distribution over every prompt position: how much a faster
    path changes what the model would sample."""
    with torch.inference_mode():
        ids, mask = enc["input_ids"][:4], enc["attention_mask"][:4]
        p = reference(input_ids=ids, attention_mask=mask).logits.float().log_softmax(-1)
        q = model(input_ids=ids, attention_mask=mask).logits.float().log_softmax(-1)
        kl = (p.exp() * (p - q)).sum(-1)
        return float(kl[mask.bool()].mean())


def llama_cpp_batched(batch: int, steps: int) -> dict | None:
    """benchmarks/llama_batched.py in the llama.cpp venv (`make llama-server`), or None where there is none."""
    import subprocess

    from models.resolve import resolve_model

    python = Path(__file__).resolve().parents[1] / ".venv-llama" / "bin" / "python"
    if not python.exists():
        print("  llama.cpp batched decode: no .venv-llama (make llama-server), skipped")
        return None
    done = subprocess.run([str(python), str(Path(__file__).with_name("llama_batched.py")),
                           resolve_model("smollm2").label, "--batch", str(batch), "--steps", str(steps),
                           "--threads", str(torch.get_num_threads())], capture_output=True, text=True, timeout=900)
    if done.returncode:
        print(f"  llama.cpp batched decode failed: {done.stderr[-300:]}")
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_linear_floor(quick: bool):
    """The floor under a decode step: the 211 matrix products of one SmolLM2-135M step (every linear layer and the
    output layer, random weights of the same shapes) for 16 rows, alone, in bfloat16 and with the CPU kernels that
    read fewer bytes per weight: weight-only int8 (per output channel) and int4 (groups of 32 with scale and zero,
    which represents the GGUF's Q4_1 weights exactly)."""
    rows, group_size = 16, 32
    shapes = [(576, 576), (192, 576), (192, 576), (576, 576), (1536, 576), (1536, 576), (576, 1536)] * 30 + [(49152, 576)]
    generator = torch.Generator().manual_seed(0)
    weights = [torch.randn(o, i, generator=generator, dtype=torch.bfloat16) * 0.02 for o, i in shapes]
    inputs = {i: torch.randn(rows, i, generator=generator, dtype=torch.bfloat16) for i in (576, 1536)}
    group = f"linear layers, {rows} rows"
    weight_mb = sum(w.numel() for w in weights) * 2 / 2**20
    secs, _ = timed(lambda: [torch.nn.functional.linear(inputs[w.shape[1]], w) for w in weights], 2 if quick else 5)
    record(group, "bfloat16 (the model's path)", secs, 1, "steps/s", None, weight_gb_per_s=weight_mb / 1024 / secs)
    int8 = []
    for w in weights:
        scale = w.float().abs().amax(1).clamp_min(1e-8) / 127
        int8.append((torch.round(w.float() / scale[:, None]).to(torch.int8), scale.to(torch.bfloat16)))
    secs, _ = timed(lambda: [torch.ops.aten._weight_int8pack_mm(inputs[q.shape[1]], q, s) for q, s in int8], 2 if quick else 5)
    record(group, "weight-only int8", secs, 1, "steps/s", "bfloat16 (the model's path)")
    int4 = []
    for w in weights:
        out, inner = w.shape
        blocks = w.float().reshape(out, inner // group_size, group_size)
        low, scale = blocks.amin(-1), ((blocks.amax(-1) - blocks.amin(-1)) / 15).clamp_min(1e-8)
        q = torch.round((blocks - low[..., None]) / scale[..., None]).clamp(0, 15).to(torch.int32).reshape(out, inner)
        scale_zero = torch.stack([scale, low + 8 * scale], -1).transpose(0, 1).contiguous().to(torch.bfloat16)
        int4.append((torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1), scale_zero, inner))
    secs, _ = timed(lambda: [torch.ops.aten._weight_int4pack_mm_for_cpu(inputs[i], p, group_size, sz)
                             for p, sz, i in int4], 2 if quick else 5)
    record(group, "weight-only int4 (Q4_1 exact)", secs, 1, "steps/s", "bfloat16 (the model's path)")


# --- 2. judging ------------------------------------------------------------------------------------------------


def bench_judging(backends: dict, domain, texts: list[str], quick: bool):
    judges = [JudgeConfig(name="chat0", phrasing=0), JudgeConfig(name="chat1", phrasing=1)]
    axis = domain.axes[0]
    group = f"judge {len(judges)} judges x {len(texts)}"
    fp32 = backends["float32"]

    def generative():
        return [generative_scores(fp32, j, axis, texts, retries=0) for j in judges]

    secs, scores = timed(generative, 1, 0)
    valid = float(np.mean([np.isfinite(s).mean() for s in scores]))
    record(group, "generative (score as text)", secs, len(judges) * len(texts), "judgements/s", None, valid_share=valid)
    for precision, backend in backends.items():
        for reuse in (False, True):
            def logprob():
                out = []
                for j in judges:
                    qp = question_prompts(backend, j, axis, texts)
                    out.append(first_label_probability(backend.option_logprobs(qp.prompts, list(qp.options), reuse_prefix=reuse)))
                return out

            secs, probs = timed(logprob, 1 if quick else 3, 1)
            variant = f"log-prob {precision}{', prefix reused' if reuse else ''}"
            record(group, variant, secs, len(judges) * len(texts), "judgements/s", "generative (score as text)")
            if precision == "float32" and not reuse:
                reference = probs
            else:  # do lower precision or prefix reuse change the judgements?
                drift = float(np.mean([np.abs(a - b).mean() for a, b in zip(probs, reference)]))
                ROWS[-1]["mean_abs_diff_vs_float32"] = drift
                print(f"  {'':<28} {'  mean |P - P(float32)|':<30} {drift:.4f}")
    # The default path (bfloat16, prefix reused) beside what it was before only the read positions went through
    # the output layer, and with larger scoring batches than the CPU default.
    backend = backends["bfloat16"]

    def default_path(score_batch_size=None):
        for j in judges:
            qp = question_prompts(backend, j, axis, texts)
            backend.option_logprobs(qp.prompts, list(qp.options), score_batch_size=score_batch_size)

    with every_position_through_the_output_layer(backend):
        secs, _ = timed(default_path, 1 if quick else 3, 1)
    record(group, "bf16 reused, every position (old)", secs, len(judges) * len(texts), "judgements/s",
           "generative (score as text)")
    for size in (None, 32, 64):
        secs, _ = timed(lambda: default_path(size), 1 if quick else 3, 1)
        record(group, f"bf16 reused, read positions, {size or 'default'}/batch", secs, len(judges) * len(texts),
               "judgements/s", "bf16 reused, every position (old)")


@contextlib.contextmanager
def every_position_through_the_output_layer(backend):
    """The judging path before 2026-11-26, for its baseline row: the output layer and the log-softmax at every
    position of every row, the read positions picked out afterwards (the same numbers at the old cost)."""
    model, forward = backend.model, backend.model.forward

    def full(*args, logits_to_keep=0, **kwargs):
        out = forward(*args, **kwargs)
        out.logits.float().log_softmax(-1)  # what the old path computed over every position
        if torch.is_tensor(logits_to_keep):
            out.logits = out.logits[logits_to_keep]
        return out

    model.forward = full
    try:
        yield
    finally:
        del model.forward


# --- 3. embeddings, archive, Parquet at scale --------------------------------------------------------------------


def bench_embedding(texts: list[str], quick: bool):
    from models.embedder import load_embedder

    embedder = load_embedder()
    n = 256 if quick else 1000
    sentences = (texts * (n // len(texts) + 1))[:n]
    group = "embed MiniLM"
    secs, _ = timed(lambda: [embedder.embed([t]) for t in sentences[:64]], 1, 0)
    record(group, "one sentence per call", secs, 64, "sentences/s")
    secs, _ = timed(lambda: embedder.embed(sentences, batch_size=64), 1, 1)
    record(group, f"batched ({n} sentences)", secs, n, "sentences/s", "one sentence per call")


def naive_map_elites(cells: np.ndarray, quality: np.ndarray) -> dict:
    """The baseline: a dict of cell -> (quality, index), one candidate at a time."""
    best: dict[int, tuple[float, int]] = {}
    for i, (c, q) in enumerate(zip(cells.tolist(), quality.tolist())):
        if c not in best or q > best[c][0]:
            best[c] = (q, i)
    return best


def bench_archive(quick: bool):
    from evoforge.core.archive import QDArchive

    bins = [0.005, 0.02, 0.05, 0.2, 0.5, 0.8, 0.95, 0.98, 0.995]
    sizes = [1_000, 100_000] if quick else [1_000, 100_000, 1_000_000]
    for n in sizes:
        group = f"archive insert {n:,}"
        rng = np.random.default_rng(0)
        measures, quality = rng.random((n, 2)), rng.random(n)
        texts = np.array([f"candidate text number {i} " * 8 for i in range(min(n, 1000))], dtype=object)
        texts = np.resize(texts, n)
        archive = QDArchive(["genre", "ending"], [bins, bins])
        secs, _ = timed(lambda: naive_map_elites(archive.cell_index(measures), quality), 1, 0)
        record(group, "python dict, 1 at a time", secs, n, "candidates/s")

        def batched():
            a = QDArchive(["genre", "ending"], [bins, bins])
            for start in range(0, n, 10_000):  # generations of 10k candidates
                end = min(n, start + 10_000)
                a.add(np.arange(start, end), texts[start:end], quality[start:end], measures[start:end], generation=start)
            return a

        tracemalloc.start()
        secs, a = timed(batched, 1, 0)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        record(group, "pyribs batches of 10k", secs, n, "candidates/s", "python dict, 1 at a time", peak_mb=peak / 2**20)
        assert a.stats()["num_elites"] <= 100


def bench_parquet(quick: bool):
    from evoforge.core.store import RunStore

    n, per_generation = (100_000, 10_000) if quick else (1_000_000, 50_000)
    group = f"parquet {n:,} candidates"
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        store = RunStore(folder)

        def write_all():
            for g in range(n // per_generation):
                part = pd.DataFrame({
                    "cid": np.arange(g * per_generation, (g + 1) * per_generation), "generation": g,
                    "text": [f"a candidate text of some length, number {i}" for i in range(per_generation)],
                    "quality": rng.random(per_generation), "measure_sentiment": rng.random(per_generation),
                    "inserted": rng.random(per_generation) < 0.01,
                })
                store.write_generation(g, part, part.head(20), pd.DataFrame({"generation": [g], "expert_id": [0]}), {})
            return store.merge_candidates(n // per_generation)

        tracemalloc.start()
        secs, path = timed(write_all, 1, 0)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        record(group, "parts + streamed merge", secs, n, "candidates/s", None, peak_mb=peak / 2**20,
               file_mb=Path(path).stat().st_size / 2**20)


def bench_memory(quick: bool):
    """Peak RSS of a subprocess that archives and stores N candidates (benchmarks/memory.py): the memory figure
    for a long run, Arrow's buffers included (tracemalloc, above, sees only Python's allocations)."""
    import subprocess

    n = 100_000 if quick else 1_000_000
    started = time.perf_counter()
    done = subprocess.run([sys.executable, str(Path(__file__).with_name("memory.py")), "--candidates", str(n)],
                          capture_output=True, text=True, timeout=1800, check=True)
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    record(f"memory {n:,} candidates", "archive + Parquet, peak RSS", time.perf_counter() - started, n,
           "candidates/s", None, peak_rss_mb=figures["peak_rss_mb"], rss_after_imports_mb=figures["rss_after_imports_mb"])


# --- 4. end to end -----------------------------------------------------------------------------------------------


def bench_end_to_end(quick: bool):
    """A short real run: wall time by stage, and the share spent outside model compute."""
    from mlflow.tracking import MlflowClient

    from evoforge.core.config import RunConfig
    from evoforge.core.tracking import tracking_uri
    from flows.evolution import evolution_run

    from models.embedder import load_embedder
    from models.loading import load_backend

    load_backend("smollm2", "auto")  # loaded before the clock starts for the steady-state row (cached per process)
    load_embedder()
    generations = 2 if quick else 3
    with tempfile.TemporaryDirectory() as folder:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder}/mlflow.db"
        os.environ.setdefault("PREFECT_HOME", f"{folder}/prefect")
        config = RunConfig(generations=generations, out=folder, run_name="bench")
        started = time.perf_counter()
        summary = evolution_run(config)
        wall = time.perf_counter() - started
        client = MlflowClient(tracking_uri())
        stage = {k: sum(m.value for m in client.get_metric_history(summary["mlflow_run_id"], f"seconds_{k}"))
                 for k in ("generate", "judge", "archive")}
        info = client.get_run(summary["mlflow_run_id"]).info
        in_run = (info.end_time - info.start_time) / 1000  # the tracked part: generations and finish
    model = stage["generate"] + stage["judge"]
    group = f"end to end {generations} gens x 16"
    record(group, "whole flow (server start-up)", wall, generations * 16, "candidates/s", None,
           share_outside_model=(wall - model) / wall)
    record(group, "generations (steady state)", in_run, generations * 16, "candidates/s", None,
           share_outside_model=(in_run - model) / in_run, share_generate=stage["generate"] / in_run,
           share_judge=stage["judge"] / in_run, share_archive=stage["archive"] / in_run)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats (a smoke run)")
    parser.add_argument("--only", nargs="*", default=None,
                        choices=["generation", "linear", "judging", "embedding", "archive", "parquet", "memory", "e2e"])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    chosen = set(args.only or ["generation", "linear", "judging", "embedding", "archive", "parquet", "memory", "e2e"])
    machine = machine_info()
    print(f"machine: {machine}")
    print(f"  {'group':<28} {'variant':<30} {'median':>11} {'throughput':>12} {'unit':<14} ratio")
    started = time.perf_counter()
    domain = load_domain("opinions")
    texts = domain.load_pool()
    if chosen & {"generation", "judging"}:
        from models.loading import load_backend

        backends = {"float32": load_backend("smollm2", "float32"), "bfloat16": load_backend("smollm2", "bfloat16")}
        for backend in backends.values():  # the first calls pay one-off costs (allocation, kernel selection)
            backend.generate(["Hello, my name is"], [SamplingSettings(max_new_tokens=4)], seed=0)
            backend.option_logprobs(["Is this a test?"], ["yes", "no"])
        if "generation" in chosen:
            bench_generation(backends, domain, args.quick)
            if _LLAMA:  # closed here: its destructor fails at interpreter exit
                _LLAMA.pop("model").close()
            bench_decode_bound(backends, domain, args.quick)
        if "judging" in chosen:
            bench_judging(backends, domain, texts, args.quick)
    if "linear" in chosen:
        bench_linear_floor(args.quick)
    if "embedding" in chosen:
        bench_embedding(texts, args.quick)
    if "archive" in chosen:
        bench_archive(args.quick)
    if "parquet" in chosen:
        bench_parquet(args.quick)
    if "memory" in chosen:
        bench_memory(args.quick)
    if "e2e" in chosen:
        bench_end_to_end(args.quick)
    total = time.perf_counter() - started
    print(f"total {total:.0f} s")
    suffix = ("-quick" if args.quick else "") + ("-" + "-".join(sorted(chosen)) if args.only else "")
    write_results(args.out, machine, total, suffix)
    return 0


def write_results(folder: str, machine: dict, seconds: float, suffix: str) -> Path:
    """The rows measured so far as `<date>-<host><suffix>.json` in `folder`."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{datetime.now(timezone.utc):%Y-%m-%d}-{machine['host']}{suffix}.json"
    path.write_text(json.dumps({"machine": machine, "seconds": seconds, "rows": ROWS}, indent=2, default=float))
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    sys.exit(main())
