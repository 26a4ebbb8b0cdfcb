"""llama.cpp's batched decoding of the embedded GGUF, through llama-cpp-python's low-level API: B sequences in one
`llama_decode` per step (what llama.cpp's server does with parallel slots), greedy, nothing else.

Run by benchmarks/bench.py with the separate venv that `make llama-server` builds (.venv-llama); prints one JSON
line: {"batch": B, "threads": T, "prefill_s": ..., "ms_per_step": ...}.

    .venv-llama/bin/python benchmarks/llama_batched.py MODEL.gguf --batch 16 --threads 2
"""

import argparse
import json
import time

import llama_cpp as L
import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompt-tokens", type=int, default=150)
    parser.add_argument("--steps", type=int, default=16)
    args = parser.parse_args()
    B, P, N = args.batch, args.prompt_tokens, args.steps
    L.llama_backend_init()
    quiet = L.llama_log_callback(lambda *_: None)  # kept referenced: llama.cpp calls it for the process's life
    L.llama_log_set(quiet, None)
    model = L.llama_model_load_from_file(args.model.encode(), L.llama_model_default_params())
    params = L.llama_context_default_params()
    params.n_ctx, params.n_batch, params.n_seq_max = B * (P + N + 8), B * P, B
    params.n_threads = params.n_threads_batch = args.threads
    ctx = L.llama_init_from_model(model, params)
    n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(model))
    batch = L.llama_batch_init(B * P, 0, B)

    def decode(items):  # (token, position, sequence, wants logits)
        batch.n_tokens = len(items)
        for i, (token, position, sequence, logits) in enumerate(items):
            batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, position, 1, logits
            batch.seq_id[i][0] = sequence
        assert L.llama_decode(ctx, batch) == 0

    def argmax(i):
        return int(np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, i), shape=(n_vocab,)).argmax())

    rng = np.random.default_rng(0)
    started = time.perf_counter()
    decode([(int(rng.integers(100, 30000)), p, s, p == P - 1) for s in range(B) for p in range(P)])
    prefill = time.perf_counter() - started
    tokens = [argmax(s * P + P - 1) for s in range(B)]
    started = time.perf_counter()
    for step in range(N):
        decode([(tokens[s], P + step, s, True) for s in range(B)])
        tokens = [argmax(s) for s in range(B)]
    step_s = (time.perf_counter() - started) / N
    print(json.dumps({"batch": B, "threads": args.threads, "prefill_s": prefill, "ms_per_step": 1000 * step_s}))


if __name__ == "__main__":
    main()
