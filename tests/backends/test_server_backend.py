"""The OpenAI-compatible server backend against a real llama.cpp server (`make llama-server`) serving the embedded
SmolLM2 GGUF on loopback ports: generation, judging agreement with the in-process backend, an evolution run with
the generator on the server, and two nodes of which one is killed mid-run. Where the server is not built or does
not start, these tests skip and say why. `pytest -k server_backend` selects them all."""

import http.server
import json
import threading
import time

import numpy as np
import pandas as pd
import pytest

from models.backend import SamplingSettings
from models.llama_server import ServerUnavailable, start_llama_server
from models.openai_backend import (
    ChatPrompt,
    NoLogprobsError,
    OpenAIBackend,
    ServerConfigError,
    ServerError,
    parse_server_name,
)
from models.resolve import ModelNotFoundError, resolve_model, short_name

# Measured on a 2-core Xeon (AVX-512 BF16, AMX): llama.cpp's Q4_1 kernels (activations quantised to 8 bits) and
# transformers' float32 dequantised weights give P(first label) within 0.03 of each other on these judge prompts;
# the bound leaves room for other CPUs' kernels.
JUDGE_TOLERANCE = 0.08


# --- names and errors (fast: no server needed) -------------------------------------------------------------------
def test_server_backend_names_and_clear_errors(tmp_path, monkeypatch):
    one = parse_server_name("openai:smollm2@http://127.0.0.1:8080/v1")
    assert one.model == "smollm2" and [n.url for n in one.nodes] == ["http://127.0.0.1:8080/v1"]
    two = parse_server_name("openai:m@http://127.0.0.1:8080/v1/,http://127.0.0.1:8081/v1")
    assert [n.name for n in two.nodes] == ["127.0.0.1_8080", "127.0.0.1_8081"] and two.nodes[0].url.endswith("/v1")
    for bad, says in [("openai:smollm2", "openai:<model>@<base_url>"), ("openai:m@ftp://x", "http(s) URL"),
                      ("openai:m@http://a:1,http://a:1", "node names must differ"),
                      ("openai:missing.yaml", "does not exist")]:
        with pytest.raises(ServerConfigError, match=says.replace("(", r"\(").replace(")", r"\)")):
            parse_server_name(bad)
    with pytest.raises(ModelNotFoundError, match="no local files"):
        resolve_model("openai:smollm2@http://127.0.0.1:8080/v1")
    assert short_name("openai:smollm2@http://a:1/v1,http://b:2/v1") == "openai:smollm2"  # tables, run names
    assert short_name("openai:/etc/nodes.yaml") == "nodes.yaml" and short_name("runs/x/checkpoint") == "checkpoint"

    endpoints = tmp_path / "nodes.yaml"
    endpoints.write_text("model: remote-model\napi_key_env: EVOFORGE_TEST_KEY\nextra_body: {repeat_penalty: 1.0}\n"
                         "nodes:\n  - {name: a, url: 'http://127.0.0.1:9/v1'}\n  - http://127.0.0.1:10/v1\n")
    config = parse_server_name(f"openai:{endpoints}")
    assert [n.name for n in config.nodes] == ["a", "127.0.0.1_10"] and config.extra_body == {"repeat_penalty": 1.0}
    monkeypatch.delenv("EVOFORGE_TEST_KEY", raising=False)
    with pytest.raises(ServerConfigError, match="EVOFORGE_TEST_KEY"):
        OpenAIBackend(f"openai:{endpoints}")
    monkeypatch.setenv("EVOFORGE_TEST_KEY", "sk-secret-value")
    backend = OpenAIBackend(f"openai:{endpoints}")
    assert "sk-secret-value" not in repr(backend.config) + json.dumps(backend.stats()) + backend.device
    endpoints.write_text("model: m\nnodes: [http://127.0.0.1:9/v1]\napi_key: sk-inline\n")
    with pytest.raises(ServerConfigError, match="unknown keys"):
        parse_server_name(f"openai:{endpoints}")
    endpoints.write_text("model: m\nnodes: [http://127.0.0.1:9/v1]\nchat: messages\n")
    with pytest.raises(ServerConfigError, match="'chat' must be one of auto, completions, chat, got 'messages'"):
        parse_server_name(f"openai:{endpoints}")


def test_server_backend_chat_mode_picks_the_endpoint_and_the_chat_format(tmp_path):
    """auto: the local template where the model's tokenizer is on disk, else the chat endpoint (the server's
    template); `chat:` forces either. Nothing is sent here: the URLs lead nowhere."""
    local = OpenAIBackend("openai:smollm2@http://127.0.0.1:9/v1")  # smollm2 resolves locally: its template
    assert not local.chat_endpoint and local.has_chat_template
    assert type(local.chat_prompt("Hi")) is str and "<|im_start|>assistant" in local.chat_prompt("Hi")
    remote = OpenAIBackend("openai:remote-smollm@http://127.0.0.1:9/v1")  # no local tokenizer: the chat endpoint
    assert remote.chat_endpoint and remote.has_chat_template
    turn = remote.chat_prompt("Hi", system="Be brief.")
    assert isinstance(turn, ChatPrompt) and turn.messages == ({"role": "system", "content": "Be brief."},
                                                              {"role": "user", "content": "Hi"})
    assert turn + "" is turn and type(turn + " Hello") is str  # a turn plus a partial answer is text again
    import pickle

    assert pickle.loads(pickle.dumps(turn)).messages == turn.messages
    for mode, endpoint, chat_format in [("chat", True, True), ("completions", False, True)]:
        (tmp_path / f"{mode}.yaml").write_text(f"model: smollm2\nchat: {mode}\nnodes: [http://127.0.0.1:9/v1]\n")
        forced = OpenAIBackend(f"openai:{tmp_path / mode}.yaml")
        assert (forced.chat_endpoint, forced.has_chat_template) == (endpoint, chat_format)
        assert isinstance(forced.chat_prompt("Hi"), ChatPrompt) == endpoint
        assert "<|im_start|>assistant" in forced.chat_prompt("Hi")  # the text is the local template's either way
    (tmp_path / "plain.yaml").write_text("model: remote-smollm\nchat: completions\nnodes: [http://127.0.0.1:9/v1]\n")
    plain = OpenAIBackend(f"openai:{tmp_path}/plain.yaml")  # no tokenizer, chat endpoint refused: no chat format
    assert not plain.has_chat_template and plain.chat_prompt("Hi") == "User: Hi\nAssistant:"


def test_server_backend_dead_endpoint_fails_with_the_reason(tmp_path):
    from models.llama_server import free_port

    endpoints = tmp_path / "dead.yaml"  # nothing listens on the port
    endpoints.write_text(f"model: remote-model\nretries: 1\nnodes: [{{name: dead, url: 'http://127.0.0.1:{free_port()}/v1'}}]\n")
    backend = OpenAIBackend(f"openai:{endpoints}")
    with pytest.raises(ServerError, match="no node answered"):
        backend.generate(["Hi"], [SamplingSettings(max_new_tokens=2)])
    stats = backend.stats()
    assert stats["backend/dead/errors"] >= 1 and stats["backend/dead/alive"] == 0.0


class NoLogprobsServer(http.server.BaseHTTPRequestHandler):
    """Injected fault: an OpenAI-compatible server that refuses more alternatives than OpenAI's API allows (5 on
    the completions endpoint, 20 on the chat endpoint) and then answers without log-probabilities (as
    `transformers serve` does)."""

    asked = []  # (endpoint, the number of alternatives asked for) per request

    def do_POST(self):
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        chat = self.path.endswith("/chat/completions")
        asked = request.get("top_logprobs" if chat else "logprobs")
        NoLogprobsServer.asked.append(("chat" if chat else "completions", asked))
        if (asked or 0) > (20 if chat else 5):
            body, status = b'{"error": {"message": "too many logprobs"}}', 400
        else:
            answer = {"message": {"role": "assistant", "content": "yes"}} if chat else {"text": " yes"}
            body, status = json.dumps({"choices": [{**answer, "logprobs": None}],
                                       "usage": {"completion_tokens": 1, "total_tokens": 5}}).encode(), 200
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_server_backend_refuses_logprob_judging_without_logprobs():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NoLogprobsServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        backend = OpenAIBackend(f"openai:smollm2@http://127.0.0.1:{server.server_port}/v1")
        assert backend.generate(["Hi"], [SamplingSettings(max_new_tokens=1)])[0].text == " yes"  # generative works
        with pytest.raises(NoLogprobsError, match="cannot serve 'logprob' or 'label' judges"):
            backend.option_logprobs(["Is it good?"], ["yes", "no"])
        assert NoLogprobsServer.asked[-4:] == [("completions", k) for k in (1000, 100, 20, 5)]  # less when refused
        assert backend.top_k["/completions"] == 5
        remote = OpenAIBackend(f"openai:remote-smollm@http://127.0.0.1:{server.server_port}/v1")  # the chat endpoint
        turn = remote.chat_prompt("Is it good?")
        assert remote.generate([turn], [SamplingSettings(max_new_tokens=1)])[0].text == "yes"
        with pytest.raises(NoLogprobsError, match="cannot serve 'logprob' or 'label' judges"):
            remote.option_logprobs([turn], ["yes", "no"])
        assert NoLogprobsServer.asked[-4:] == [("chat", None), ("chat", 1000), ("chat", 100), ("chat", 20)]
        assert remote.top_k == {"/completions": 1000, "/chat/completions": 20}  # OpenAI's chat cap, kept apart
    finally:
        server.shutdown()


# --- against the real llama.cpp server ---------------------------------------------------------------------------
@pytest.fixture(scope="session")
def start_server(session_dir):
    """Starts llama.cpp servers serving the embedded GGUF as model 'smollm2'; stops them all at the end."""
    started = []
    gguf = resolve_model("smollm2").label

    def start():
        try:
            server = start_llama_server(gguf, "smollm2", session_dir / f"llama-server-{len(started)}.log")
        except ServerUnavailable as err:
            pytest.skip(f"llama.cpp server unavailable: {err}")
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def llama_server(start_server):
    return start_server()


@pytest.mark.slow
def test_server_backend_generates_with_per_row_settings_and_stop_strings(llama_server):
    from models.loading import load_backend

    backend = load_backend(f"openai:smollm2@{llama_server.base_url}")
    assert backend.has_chat_template and "<|im_start|>assistant" in backend.chat_prompt("Hello")
    count = "Count from 1 to 20: 1, 2, 3, 4, 5,"
    settings = [SamplingSettings(temperature=0.01, top_p=1.0, max_new_tokens=12),
                SamplingSettings(temperature=0.01, top_p=1.0, max_new_tokens=3),
                SamplingSettings(temperature=1.2, top_p=0.9, frequency_penalty=0.5, presence_penalty=0.5,
                                 max_new_tokens=10)]
    free = backend.generate([count] * 3, settings, seed=7)
    assert " 9" in free[0].text and free[0].new_tokens == 12
    assert 1 <= free[1].new_tokens <= 3 and len(free[1].text) < len(free[0].text)
    assert 1 <= free[2].new_tokens <= 10
    assert backend.generate([count] * 3, settings, seed=7) == free  # seeds pass through: the same rows again

    stopped = backend.generate([count], settings[:1], stop=[" 9"], seed=7)[0]
    assert "9" not in stopped.text and "8" in stopped.text and stopped.new_tokens < 12

    stats = backend.stats()
    node = backend.config.nodes[0].name
    assert stats[f"backend/{node}/requests"] >= 7 and stats[f"backend/{node}/errors"] == 0
    assert stats[f"backend/{node}/tokens"] > 0 and 0 < stats[f"backend/{node}/latency_p50_s"]


def judge_prompts(domain_name: str, texts: list[str], backend, fmt: str):
    from evoforge.core.config import JudgeConfig
    from evoforge.core.domain import load_domain
    from evoforge.judges.panel import question_prompts

    domain = load_domain(domain_name)
    judge = JudgeConfig(name="j", format=fmt)
    return [question_prompts(backend, judge, q, texts) for q in (domain.quality, domain.axes[0])]


JUDGED_TEXTS = ["Vegetables are delicious and I eat them every day.", "I hate broccoli, it tastes awful.",
                "Plant-based meals keep me healthy and happy.", "Salad is boring and never fills me up.",
                "The weather was cloudy on Tuesday.", "Lentil soup is the best thing I cook all winter."]


@pytest.mark.slow
def test_server_backend_judge_agrees_with_in_process(llama_server, exact_backend):
    from evoforge.judges.panel import first_label_probability
    from models.loading import load_backend

    server = load_backend(f"openai:smollm2@{llama_server.base_url}")
    worst = {}
    for fmt in ("chat", "instruct"):
        for qp in judge_prompts("opinions", JUDGED_TEXTS, server, fmt):
            here = first_label_probability(exact_backend.option_logprobs(qp.prompts, list(qp.options)))
            there = first_label_probability(server.option_logprobs(qp.prompts, list(qp.options)))
            worst[(fmt, qp.options)] = float(np.max(np.abs(here - there)))
    print("max |P(first label) server - in-process|:", worst, "floored share:", server.floored_share)
    assert max(worst.values()) <= JUDGE_TOLERANCE, worst
    assert server.floored_share < 0.1 and server.top_k["/completions"] == 1000  # llama.cpp returns all asked


# The chat endpoint: a server model with no local tokenizer ('remote-smollm' resolves to nothing here; the server
# answers any model name with the one model it serves), so chat prompts go as messages and the server applies the
# GGUF's own chat template (llama-cpp-python 0.3.36 uses its `tokenizer.chat_template`, the same Jinja template as
# the Hugging Face tokenizer's, default system prompt included).
@pytest.fixture(scope="session")
def remote_name(llama_server):
    return f"openai:remote-smollm@{llama_server.base_url}"


@pytest.mark.slow
def test_server_backend_chat_endpoint_generates_with_per_row_max_tokens_and_stop(llama_server, remote_name):
    from models.loading import load_backend

    backend = load_backend(remote_name)
    assert backend.tokenizer is None and backend.chat_endpoint and backend.has_chat_template
    turn = backend.chat_prompt("Count from 1 to 20.")
    settings = [SamplingSettings(temperature=0.0, top_p=1.0, max_new_tokens=16),  # greedy: repeatable
                SamplingSettings(temperature=0.0, top_p=1.0, max_new_tokens=3),
                SamplingSettings(temperature=1.2, top_p=0.9, frequency_penalty=0.5, presence_penalty=0.5,
                                 max_new_tokens=10)]
    before = llama_server.answered("/chat/completions")
    outs = backend.generate([turn] * 3, settings, seed=7)
    free = outs[0].text
    assert outs[0].new_tokens == 16 and len(free) > 12 and "Assistant" not in free
    assert 1 <= outs[1].new_tokens <= 3 and free.startswith(outs[1].text) and len(outs[1].text) < len(free)
    assert 1 <= outs[2].new_tokens <= 10
    stop = free[len(free) // 2:len(free) // 2 + 2]  # from the greedy answer's second half: the server cuts there
    stopped = backend.generate([turn], settings[:1], stop=[stop], seed=7)[0]
    assert stopped.text == free[:free.index(stop)] and stopped.new_tokens < 16, (free, stop, stopped)
    assert llama_server.answered("/chat/completions") - before == 4  # every row went to the chat endpoint


@pytest.mark.slow
def test_server_backend_chat_endpoint_judge_agrees_with_in_process(llama_server, remote_name, exact_backend):
    """A model without a local tokenizer still gets chat-format judges: through the chat endpoint, reading the
    first answer token's top_logprobs, in agreement with the same judge in-process (float32)."""
    from evoforge.judges.panel import first_label_probability
    from models.loading import load_backend

    remote = load_backend(remote_name)
    before = llama_server.answered("/chat/completions"), llama_server.answered("/completions")
    worst = {}
    for there, here in zip(judge_prompts("opinions", JUDGED_TEXTS, remote, "chat"),
                           judge_prompts("opinions", JUDGED_TEXTS, exact_backend, "chat")):
        assert all(isinstance(p, ChatPrompt) for p in there.prompts) and there.options == here.options
        p_there = first_label_probability(remote.option_logprobs(there.prompts, list(there.options)))
        p_here = first_label_probability(exact_backend.option_logprobs(here.prompts, list(here.options)))
        worst[there.options] = float(np.max(np.abs(p_here - p_there)))
    print("chat endpoint: max |P(first label) server - in-process|:", worst, "floored:", remote.floored_share)
    assert max(worst.values()) <= JUDGE_TOLERANCE, worst
    # One chat request per prompt (the labels are one token each), nothing through the completions endpoint.
    assert (llama_server.answered("/chat/completions") - before[0], llama_server.answered("/completions") - before[1]) \
        == (2 * len(JUDGED_TEXTS), 0)
    assert remote.floored_share == 0.0 and remote.top_k["/chat/completions"] == 1000


@pytest.mark.slow
def test_server_backend_run_ask_and_evaluate_with_server_models(prefect_server, backend, llama_server, remote_name,
                                                                tmp_path):
    """A run and an `ask` with every model on the server (generator, judges, experts, reward judge; chat prompts
    through the chat endpoint, the run's LMX prompts through the completions endpoint), and `evaluate` of a server
    model against another server model (the CLI's `--model` and `--champion`) judged by a server judge (`--config`'s
    run settings)."""
    from evoforge.core.config import EvaluateConfig, JudgeConfig, RunConfig, TournamentConfig
    from flows.evolution import evolution_run
    from flows.finetune import evaluate_model
    from flows.tournament import moe_tournament

    before = llama_server.answered("/chat/completions"), llama_server.answered("/completions")
    run = evolution_run(RunConfig(
        generations=1, experts=2, batch_size=2, max_new_tokens=24, continue_tokens=0, seed=5,
        generator_models=[remote_name], judges=[JudgeConfig(name="chat0", model=remote_name)],
        judge_references=False, heldout_judge=False, out=str(tmp_path / "run"), run_name="served"))
    candidates = pd.read_parquet(tmp_path / "run" / "served" / "candidates.parquet")
    assert len(candidates) == 2 and (candidates["backend"] == remote_name).all() and run["qd_score"] >= 0
    valid = candidates[candidates["valid"]]
    assert len(valid) >= 1 and valid["quality"].between(0, 1).all()
    # 2 LMX candidates as text; each valid one judged on 2 questions as chat turns.
    assert llama_server.answered("/completions") - before[1] >= 2
    assert llama_server.answered("/chat/completions") - before[0] >= 2 * len(valid)

    before = llama_server.answered("/chat/completions")
    config = TournamentConfig(
        instruction="Answer in one short sentence. What is the capital of France?", experts=2, max_new_tokens=12,
        continue_tokens=4, min_iterations=1, max_iterations=1, generator_models=[remote_name],
        judges=[JudgeConfig(name="chat0", model=remote_name)], reward_model=remote_name,
        out=str(tmp_path / "ask"), population_file=str(tmp_path / "population.parquet"), run_name="served")
    summary = moe_tournament(config)
    answers = pd.read_parquet(summary["answers_path"])
    assert len(answers) == 2 and answers["text"].str.len().gt(0).all() and summary["answer"]
    assert answers[["relevance", "coherence"]].stack().between(0, 1).all()
    assert llama_server.answered("/chat/completions") - before >= 2 + 2 * 2  # answers, and both judged twice

    champion = f"openai:smollm2@{llama_server.base_url}"  # a local tokenizer: its template, the completions endpoint
    before = llama_server.answered("/chat/completions")
    result = evaluate_model(domain="opinions", model=remote_name, champion=champion,
                            settings=EvaluateConfig(generations=1, batch_size=2), out=str(tmp_path / "evaluate"),
                            run_settings={"judges": [{"name": "chat0", "model": remote_name}],
                                          "judge_references": False, "heldout_judge": False})
    assert llama_server.answered("/chat/completions") - before >= 2  # the arms' candidates judged on the server
    assert "candidate (`openai:remote-smollm`, niche)" in result["table"] and result["promoted"] in (True, False)
    parts = (tmp_path / "evaluate").rglob("candidates/gen_0000.parquet")  # evaluate's arms keep their parts
    arms = {p.parents[1].name: pd.read_parquet(p) for p in parts}
    assert set(arms) == {"candidate", "champion"}
    assert (arms["candidate"]["backend"] == remote_name).all() and (arms["champion"]["backend"] == champion).all()
    assert all(len(a) == 2 and a["text"].str.len().gt(0).all() for a in arms.values())


def kill_when_busy(backend, node_index: int, server, after_requests: int, killed: dict):
    """Stops `server` once its node has answered `after_requests` requests (so the run is mid-way)."""
    def watch():
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and backend.pool.nodes[node_index].requests < after_requests:
            time.sleep(0.05)
        server.process.kill()
        server.process.wait()
        killed["requests_before"] = backend.pool.nodes[node_index].requests
        killed["at"] = time.monotonic()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.mark.slow
def test_server_backend_evolution_run_survives_a_killed_node(prefect_server, backend, start_server, llama_server,
                                                             tmp_path):
    """Generator on two server nodes, judges in-process; one node is killed mid-run and the run completes."""
    from flows.evolution import evolution_run
    from evoforge.core.config import JudgeConfig, RunConfig
    from models.loading import load_backend

    second = start_server()
    endpoints = tmp_path / "nodes.yaml"  # a short cooldown, so the dead node is probed (and found dead) again
    endpoints.write_text(f"model: smollm2\nprobe_after_s: 0.5\nnodes:\n  - {{name: a, url: '{llama_server.base_url}'}}\n"
                         f"  - {{name: b, url: '{second.base_url}'}}\n")
    name = f"openai:{endpoints}"
    server_backend = load_backend(name)
    killed = {}
    watcher = kill_when_busy(server_backend, 1, second, after_requests=2, killed=killed)
    # One in-process judge, no reference scoring and no held-out judge: the server side is what is under test here.
    config = RunConfig(generations=2, experts=2, batch_size=4, max_new_tokens=16, continue_tokens=8, seed=3,
                       generator_models=[name], judges=[JudgeConfig(name="chat0")], judge_references=False,
                       heldout_judge=False, out=str(tmp_path), run_name="nodes")
    summary = evolution_run(config)
    watcher.join(timeout=5)

    candidates = pd.read_parquet(tmp_path / "nodes" / "candidates.parquet")
    assert len(candidates) == 8 and (candidates["backend"] == name).all()
    assert candidates["text"].str.len().gt(0).sum() >= 6 and summary["qd_score"] >= 0
    assert "at" in killed, "the second node was never busy enough to be killed mid-run"
    stats = server_backend.stats()
    assert stats["backend/b/requests"] == killed["requests_before"]  # nothing answered after the kill
    assert stats["backend/b/errors"] >= 1 and stats["backend/b/alive"] == 0.0
    assert stats["backend/a/requests"] > 0 and stats["backend/a/errors"] == 0
    from mlflow.tracking import MlflowClient
    from evoforge.core.tracking import tracking_uri

    logged = MlflowClient(tracking_uri()).get_run(summary["mlflow_run_id"]).data.metrics
    assert logged["backend/a/requests"] == stats["backend/a/requests"] and logged["backend/b/errors"] >= 1
    assert "backend/a/latency_p95_s" in logged and "backend/logprob_floored_share" in logged
