"""The server backend beside the in-process one: generation and judging through llama.cpp's OpenAI-compatible server
(one node, two nodes) against evoforge's batched transformers backend, on the same prompts.

    .venv/bin/python benchmarks/server_bench.py [--quick] [--server-only]    # needs `make llama-server`

The cores are shared fairly: one node gets every thread, two nodes half each. On the one node, judging is also
measured through the chat endpoint (a server model with no local tokenizer: chat prompts go as messages to
/v1/chat/completions) against the completions endpoint (the local chat template, /v1/completions). Writes
benchmarks/results/<date>-<host>-server.json with the rows of bench.py's table.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TQDM_DISABLE", "1")

from benchmarks.bench import expert_prompts, record, timed, write_results  # noqa: E402
from benchmarks.machine import machine_at_start  # noqa: E402
from evoforge.core.config import JudgeConfig  # noqa: E402
from evoforge.core.domain import load_domain  # noqa: E402
from evoforge.judges.panel import question_prompts  # noqa: E402
from models.llama_server import start_llama_server  # noqa: E402
from models.loading import load_backend  # noqa: E402
from models.resolve import resolve_model  # noqa: E402


def workloads(quick: bool):
    """bench.py's generation rows (experts x candidates, each expert its own settings) and pool texts to judge."""
    domain = load_domain("opinions")
    prompts, settings = expert_prompts(domain, 2 if quick else 4, 4, 16 if quick else 32)
    return domain, prompts, settings, domain.load_pool()[: 8 if quick else 32]


def measure(label: str, backend, domain, prompts, settings, texts, quick: bool, baseline: str) -> None:
    secs, outs = timed(lambda: backend.generate(prompts, settings, seed=0), 1 if quick else 2, 1)
    record("server: generation", label, secs, sum(o.new_tokens for o in outs), "new tok/s", baseline)
    measure_judging(label, backend, domain, texts, quick, baseline)


def measure_judging(label: str, backend, domain, texts, quick: bool, baseline: str) -> None:
    """Quality judgements (the chat format, one token per label) of `texts`."""
    qp = question_prompts(backend, JudgeConfig(name="j"), domain.quality, texts)
    secs, _ = timed(lambda: backend.option_logprobs(qp.prompts, list(qp.options)), 1 if quick else 2, 1)
    record("server: judging", label, secs, len(texts), "judgements/s", baseline)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer prompts and repeats (a smoke run)")
    parser.add_argument("--server-only", action="store_true",
                        help="only the server rows (the in-process ones take most of the time)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    machine = machine_at_start()  # with the load average: another job on the cores slows every row
    cores = os.cpu_count() or 2
    print(f"machine: {machine}")
    started = time.perf_counter()
    domain, prompts, settings, texts = workloads(args.quick)
    # The precision runs use ('auto': bfloat16 on BF16 CPUs), and float32 (the GGUF's packed kernels compute in it).
    one = f"server, 1 node x {cores} threads"
    baseline = one if args.server_only else "in-process batched"  # the ratios' reference row
    if not args.server_only:
        measure("in-process batched", load_backend("smollm2", "auto"), domain, prompts, settings, texts, args.quick,
                baseline)
        measure("in-process batched float32", load_backend("smollm2", "float32"), domain, prompts, settings, texts,
                args.quick, baseline)
    gguf = resolve_model("smollm2").label
    logs = Path(tempfile.mkdtemp(prefix="evoforge-server-bench-"))
    servers = []
    try:
        servers.append(start_llama_server(gguf, "smollm2", logs / "one.log", threads=cores))
        measure(one, load_backend(f"openai:smollm2@{servers[0].base_url}"), domain, prompts, settings, texts,
                args.quick, baseline)
        # The same judge, the same server: 'remote-smollm' has no local tokenizer, so its chat prompts go as
        # messages to the chat endpoint (the server renders the same template); compared with the row above.
        measure_judging(f"{one}, chat endpoint", load_backend(f"openai:remote-smollm@{servers[0].base_url}"), domain,
                        texts, args.quick, one)
        servers.pop().stop()
        half = max(1, cores // 2)
        servers += [start_llama_server(gguf, "smollm2", logs / f"node{i}.log", threads=half) for i in range(2)]
        name = "openai:smollm2@" + ",".join(s.base_url for s in servers)
        measure(f"server, 2 nodes x {half} threads", load_backend(name), domain, prompts, settings, texts, args.quick,
                baseline)
    finally:
        for server in servers:
            server.stop()
    total = time.perf_counter() - started
    suffix = "-server" + ("-only" if args.server_only else "") + ("-quick" if args.quick else "")
    write_results(args.out, machine, total, suffix)
    return 0


if __name__ == "__main__":
    sys.exit(main())
