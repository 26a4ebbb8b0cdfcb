"""A backend over HTTP: any OpenAI-compatible server (llama.cpp's server, vLLM, SGLang, Ollama, a hosted API), one
endpoint or several endpoints of one model (nodes) spread by a small controller.

Names (see `parse_server_name`):
- `openai:<model>@<base_url>`: one endpoint, e.g. `openai:smollm2@http://127.0.0.1:8080/v1`;
- `openai:<model>@<url1>,<url2>`: the same model on several nodes;
- `openai:<file>.yaml`: named nodes and options (API key variable, extra request fields, tokenizer, concurrency).

Text prompts (LMX) go to `/v1/completions`. Chat prompts go one of two ways (`chat:` in the endpoint file, see
`CHAT_MODES`): rendered to text by the chat template of a tokenizer on local disk (the `<model>` itself when it is a
local name such as `smollm2`, or the YAML's `tokenizer:`) and sent to `/v1/completions`, or sent as messages to
`/v1/chat/completions`, where the server applies its own template (the only way for a hosted API or a server model
evoforge cannot load). `auto` picks the first where there is a local tokenizer, else the second.

How a chat prompt reaches the chat endpoint without changing the `Backend` contract: `chat_prompt` returns a
`ChatPrompt`, a `str` (its text is the turn rendered locally, so any code that treats prompts as text still works)
that also carries its messages. `generate` and `option_logprobs` send a `ChatPrompt` as messages; a prompt built
from one (the turn plus a partial answer: a cut-off candidate's continuation, a tree search's next sentence, the
second token of a label) is a plain `str` again, as any `str` operation returns, and goes to `/v1/completions` as
its text: OpenAI's chat API cannot continue an assistant turn it did not start.

Requests run on a thread pool with a shared httpx client: the `Backend` contract is synchronous and is called from
Prefect tasks that may already run inside an event loop (where `asyncio.run` is refused), and the work is waiting
on sockets, so threads give the bounded concurrency without an event loop of our own.
"""

import functools
import os
import random
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from models.backend import Generation, SamplingSettings
from models.resolve import SERVER_PREFIX, ModelNotFoundError, is_server_model, resolve_model


class ServerConfigError(ValueError):
    """A server model name or endpoint file that cannot be used."""


class ServerError(RuntimeError):
    """A request no node could answer."""


class NoLogprobsError(ServerError):
    """The server answers without log-probabilities: it cannot serve `logprob` or `label` judges."""


@dataclass(frozen=True)
class NodeSpec:
    name: str  # in metric names: backend/<name>/...
    url: str  # the OpenAI base URL, ending in /v1 for most servers


@dataclass(frozen=True)
class EndpointConfig:
    model: str  # the model name the servers know
    nodes: tuple[NodeSpec, ...]
    tokenizer: str | None = None  # a locally resolvable model whose tokenizer (chat template, tokens) matches
    api_key_env: str | None = None  # the environment variable holding the API key (its value is never logged)
    extra_body: dict = field(default_factory=dict)  # server-specific request fields, e.g. llama.cpp repeat_penalty
    max_concurrency: int = 4  # requests in flight per node
    # Alternatives asked for on a judge's answer token: more means fewer options given the floor (at 100, a third
    # of the instruct format's labels fell outside for SmolLM2-135M; at 1000 none). A server that refuses the
    # number (vLLM allows 20 by default, OpenAI 5) is asked again with the next of TOP_LOGPROBS_FALLBACK.
    top_logprobs: int = 1000
    timeout_s: float = 120.0
    retries: int = 4  # further attempts of a failed request, on other nodes where there are some
    probe_after_s: float = 5.0  # a dead node is probed (GET /models) again after this, doubling up to 60 s
    chat: str = "auto"  # how chat prompts are sent: one of CHAT_MODES


# The values of `chat:`. auto: the chat endpoint when no local tokenizer gives the chat template, else the local
# template and the completions endpoint; completions and chat force one (completions without a local tokenizer has
# no chat format: judges then use their plain instruction format).
CHAT_MODES = ("auto", "completions", "chat")

# Asked again with the next of these when a server refuses the number of alternatives: vLLM's default cap is 20,
# OpenAI's 20 on the chat endpoint and 5 on the legacy completions endpoint.
TOP_LOGPROBS_FALLBACK = (100, 20, 5)

ENDPOINT_KEYS = {"model", "nodes", "tokenizer", "api_key_env", "extra_body", "max_concurrency", "top_logprobs",
                 "timeout_s", "retries", "probe_after_s", "chat"}


def _node_name(url: str) -> str:
    """A metric-safe name for a node given by URL: host and port."""
    parsed = httpx.URL(url)
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{parsed.host}_{parsed.port or parsed.scheme}")


def _check_url(url: str, where: str) -> str:
    if not re.match(r"^https?://[^/\s]+", url):
        raise ServerConfigError(f"{where}: '{url}' is not an http(s) URL; expected e.g. http://127.0.0.1:8080/v1")
    return url.rstrip("/")


def parse_server_name(name: str) -> EndpointConfig:
    """`openai:<model>@<url>[,<url>...]` or `openai:<file>.yaml` -> the endpoint config, or one clear error."""
    if not is_server_model(name):
        raise ServerConfigError(f"'{name}' is not a server model name (expected '{SERVER_PREFIX}...')")
    rest = name[len(SERVER_PREFIX):]
    if "@" not in rest and rest.endswith((".yaml", ".yml")):
        return _load_endpoint_file(Path(rest).expanduser())
    model, sep, urls = rest.rpartition("@")
    if not sep or not model or not urls:
        raise ServerConfigError(
            f"model '{name}': expected 'openai:<model>@<base_url>' (e.g. openai:smollm2@http://127.0.0.1:8080/v1), "
            f"several base URLs separated by commas, or 'openai:<endpoints>.yaml'"
        )
    nodes = tuple(NodeSpec(_node_name(u), _check_url(u.strip(), f"model '{name}'")) for u in urls.split(","))
    return EndpointConfig(model=model, nodes=_unique(nodes, name))


def _unique(nodes: tuple[NodeSpec, ...], where: str) -> tuple[NodeSpec, ...]:
    names = [n.name for n in nodes]
    if len(set(names)) != len(names):
        raise ServerConfigError(f"{where}: node names must differ, got {names}; name the nodes in a YAML file")
    return nodes


def _load_endpoint_file(path: Path) -> EndpointConfig:
    import yaml

    if not path.is_file():
        raise ServerConfigError(f"endpoint file {path} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    where = f"endpoint file {path}"
    if not isinstance(data, dict) or set(data) - ENDPOINT_KEYS:
        raise ServerConfigError(f"{where}: unknown keys {sorted(set(data) - ENDPOINT_KEYS) if isinstance(data, dict) else data!r}; "
                                f"allowed: {sorted(ENDPOINT_KEYS)}")
    if not isinstance(data.get("model"), str) or not data["model"]:
        raise ServerConfigError(f"{where}: 'model' (the name the servers know the model by) is required")
    nodes = data.get("nodes")
    if not isinstance(nodes, list) or not nodes:
        raise ServerConfigError(f"{where}: 'nodes' must be a list of {{name, url}} (or of URLs)")
    specs = []
    for i, node in enumerate(nodes):
        url = node if isinstance(node, str) else (node or {}).get("url") if isinstance(node, dict) else None
        if not isinstance(url, str):
            raise ServerConfigError(f"{where}: nodes[{i}] needs a 'url'")
        node_name = node.get("name") if isinstance(node, dict) and node.get("name") else _node_name(url)
        if not re.match(r"^[A-Za-z0-9_.-]+$", str(node_name)):
            raise ServerConfigError(f"{where}: nodes[{i}].name '{node_name}' may hold only letters, digits, _ . -")
        specs.append(NodeSpec(str(node_name), _check_url(url, f"{where}: nodes[{i}].url")))
    options = {k: v for k, v in data.items() if k not in ("model", "nodes")}
    if "extra_body" in options and not isinstance(options["extra_body"], dict):
        raise ServerConfigError(f"{where}: 'extra_body' must be a mapping of request fields")
    if options.get("chat", "auto") not in CHAT_MODES:
        raise ServerConfigError(f"{where}: 'chat' must be one of {', '.join(CHAT_MODES)}, got {options['chat']!r}")
    for key in ("max_concurrency", "top_logprobs", "retries"):
        if key in options and (not isinstance(options[key], int) or options[key] < (0 if key == "retries" else 1)):
            raise ServerConfigError(f"{where}: '{key}' must be a positive integer")
    return EndpointConfig(model=data["model"], nodes=_unique(tuple(specs), where), **options)


# --- the controller --------------------------------------------------------------------------------------------
class RequestRefused(ServerError):
    """The server understood the request and refused it (HTTP 4xx): another node would refuse it too."""


@dataclass
class Node:
    spec: NodeSpec
    outstanding: int = 0
    requests: int = 0
    errors: int = 0
    tokens: int = 0
    latencies: list = field(default_factory=list)
    dead_until: float = 0.0  # monotonic time; 0: alive
    cooldown_s: float = 0.0

    def stats(self) -> dict[str, float]:
        lat = np.asarray(self.latencies or [np.nan])
        return {"requests": self.requests, "errors": self.errors, "tokens": self.tokens,
                "latency_p50_s": float(np.nanpercentile(lat, 50)) if self.latencies else float("nan"),
                "latency_p95_s": float(np.nanpercentile(lat, 95)) if self.latencies else float("nan"),
                "alive": float(self.dead_until == 0.0)}


class NodePool:
    """Sends each request to the live node with the fewest outstanding requests; a failed request (connection
    error, timeout, HTTP 5xx or 429) takes its node out and is retried on another node with exponential backoff; a dead
    node is probed (GET <url>/models) once its cooldown has passed and rejoins when it answers."""

    def __init__(self, config: EndpointConfig):
        self.config = config
        self.nodes = [Node(spec) for spec in config.nodes]
        self.lock = threading.Lock()
        key = os.environ.get(config.api_key_env, "") if config.api_key_env else ""
        if config.api_key_env and not key:
            raise ServerConfigError(f"the API key variable {config.api_key_env} (api_key_env) is not set")
        headers = {"Authorization": f"Bearer {key}"} if key else {}  # kept in the client only, never logged
        limits = httpx.Limits(max_connections=config.max_concurrency * len(self.nodes) + len(self.nodes))
        self.client = httpx.Client(headers=headers, timeout=config.timeout_s, limits=limits)

    def _pick(self, exclude: set[int]) -> int | None:
        with self.lock:
            now = time.monotonic()
            alive = [i for i, n in enumerate(self.nodes) if n.dead_until == 0.0 and i not in exclude]
            due = [i for i, n in enumerate(self.nodes) if 0.0 < n.dead_until <= now and i not in exclude]
        for i in due:  # outside the lock: a probe waits on the network
            if self._probe(i):
                alive.append(i)
        if not alive:
            return None
        with self.lock:
            best = min(alive, key=lambda i: (self.nodes[i].outstanding, self.nodes[i].requests))
            self.nodes[best].outstanding += 1
            return best

    def _probe(self, i: int) -> bool:
        node = self.nodes[i]
        try:
            ok = self.client.get(f"{node.spec.url}/models", timeout=min(5.0, self.config.timeout_s)).status_code < 500
        except httpx.HTTPError:
            ok = False
        with self.lock:
            if ok:
                node.dead_until, node.cooldown_s = 0.0, 0.0
            else:
                node.cooldown_s = min(60.0, node.cooldown_s * 2)
                node.dead_until = time.monotonic() + node.cooldown_s
        return ok

    def _mark_dead(self, i: int) -> None:
        with self.lock:
            node = self.nodes[i]
            node.errors += 1
            if node.dead_until == 0.0:
                node.cooldown_s = self.config.probe_after_s
                node.dead_until = time.monotonic() + node.cooldown_s

    def post(self, path: str, body: dict) -> dict:
        """POST to one node, retried on others (with backoff) until one answers; HTTP 4xx is not retried."""
        tried: set[int] = set()
        last = "no node was available"
        for attempt in range(self.config.retries + 1):
            i = self._pick(tried)
            if i is None and tried:  # every node failed once this request: try them all again after the backoff
                tried.clear()
                i = self._pick(tried)
            if i is None:
                # Wait for the first cooldown to end (then _pick probes), bounded by the backoff.
                time.sleep(min(self._next_probe_in(), 0.5 * 2 ** attempt) + random.uniform(0, 0.1))
                continue
            node = self.nodes[i]
            start = time.monotonic()
            try:
                response = self.client.post(f"{node.spec.url}{path}", json=body)
                if response.status_code >= 500 or response.status_code == 429:  # overloaded or rate-limited: retry
                    raise httpx.HTTPStatusError(f"HTTP {response.status_code}: {response.text[:200]}",
                                                request=response.request, response=response)
                if response.status_code >= 400:
                    with self.lock:
                        node.errors += 1
                    raise RequestRefused(f"{node.spec.name} refused {path}: HTTP {response.status_code}: "
                                         f"{response.text[:300]}")
                data = response.json()
            except httpx.HTTPError as err:
                last = f"{node.spec.name}: {type(err).__name__}: {err}"
                self._mark_dead(i)
                tried.add(i)
                time.sleep(0.5 * 2 ** attempt * (attempt > 0) + random.uniform(0, 0.1))
                continue
            finally:
                with self.lock:
                    node.outstanding -= 1
            with self.lock:
                node.requests += 1
                node.latencies.append(time.monotonic() - start)
                node.tokens += int((data.get("usage") or {}).get("total_tokens") or 0)
            return data
        raise ServerError(f"model '{self.config.model}': no node answered {path} after {self.config.retries + 1} "
                          f"attempts (last: {last})")

    def _next_probe_in(self) -> float:
        with self.lock:
            waits = [n.dead_until - time.monotonic() for n in self.nodes if n.dead_until > 0.0]
        return max(0.05, min(waits)) if waits else 0.05

    def stats(self) -> dict[str, dict[str, float]]:
        with self.lock:
            return {n.spec.name: n.stats() for n in self.nodes}


@functools.lru_cache(maxsize=4)
def local_tokenizer(name: str):
    """A locally resolvable model's tokenizer, loaded once per process (a GGUF's takes seconds to convert)."""
    from transformers import AutoTokenizer

    local = resolve_model(name)
    kwargs = {"gguf_file": local.gguf_file} if local.gguf_file else {}
    return AutoTokenizer.from_pretrained(local.folder, **kwargs)


# --- the backend -----------------------------------------------------------------------------------------------
class ChatPrompt(str):
    """A chat turn for the chat endpoint: the text is the turn rendered locally (what any code that treats prompts
    as text sees, and what a completions endpoint gets), `messages` what the chat endpoint gets. Every `str`
    operation returns a plain `str`, so a prompt changed in any way (a partial answer appended) is text again; only
    appending nothing keeps the turn."""

    messages: tuple[dict, ...]

    def __new__(cls, text: str, messages: tuple[dict, ...]):
        prompt = super().__new__(cls, text)
        prompt.messages = messages
        return prompt

    def __add__(self, other: str) -> str:
        return self if other == "" else str.__add__(self, other)

    def __reduce__(self):  # pickled by Prefect's task results and caches: keep the messages
        return ChatPrompt, (str(self), self.messages)


class OpenAIBackend:
    """The `Backend` contract (models.backend) over an OpenAI-compatible server's completions and chat endpoints,
    on one or more nodes."""

    def __init__(self, name: str):
        self.name = name
        self.config = parse_server_name(name)
        self.pool = NodePool(self.config)
        self.device = ",".join(n.url for n in self.config.nodes)
        self.tokenizer = self._local_tokenizer()
        self.executor = ThreadPoolExecutor(self.config.max_concurrency * len(self.config.nodes),
                                           thread_name_prefix="openai-backend")
        # Alternatives asked for per endpoint, each lowered once if the server refuses it (OpenAI's caps differ).
        self.top_k = {"/completions": self.config.top_logprobs, "/chat/completions": self.config.top_logprobs}
        self.chat_endpoint = self.config.chat == "chat" or (self.config.chat == "auto" and not self._local_template)
        self.scored_cells = 0  # (prompt, option) log-probs read from a 1-token completion's top-k
        self.floored_cells = 0  # of those, options outside the returned top-k (given the floor)

    def _local_tokenizer(self):
        """The tokenizer of the same model on local disk, when there is one (chat template, option tokens)."""
        try:
            return local_tokenizer(self.config.tokenizer or self.config.model)
        except ModelNotFoundError:
            if self.config.tokenizer:  # named explicitly: a missing one is an error, not a silent fallback
                raise
            return None

    @property
    def _local_template(self) -> bool:
        return bool(self.tokenizer is not None and self.tokenizer.chat_template)

    @property
    def has_chat_template(self) -> bool:
        """True where chat prompts have the model's own format: the local template, or the server's (chat endpoint)."""
        return self.chat_endpoint or self._local_template

    def chat_prompt(self, user: str, system: str | None = None) -> str:
        """The turn in the local tokenizer's template (else a plain-text turn); on the chat endpoint a `ChatPrompt`
        of that text and the messages, which the server formats with its own template."""
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
        if self._local_template:
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:
            text = (f"{system}\n\n" if system else "") + f"User: {user}\nAssistant:"
        return ChatPrompt(text, tuple(messages)) if self.chat_endpoint else text

    def _request(self, prompt: str, fields: dict) -> tuple[str, dict]:
        """The endpoint and body for one prompt: a `ChatPrompt` as messages to the chat endpoint, any other prompt as
        text to the completions endpoint. `fields` are the sampling fields both share."""
        if isinstance(prompt, ChatPrompt):
            return "/chat/completions", {**self.config.extra_body, "model": self.config.model,
                                         "messages": list(prompt.messages), **fields}
        return "/completions", {**self.config.extra_body, "model": self.config.model, "prompt": str(prompt), **fields}

    def _map(self, fn, items: list) -> list:
        return list(self.executor.map(fn, items))

    def generate(self, prompts: list[str], settings: list[SamplingSettings], stop: list[str] | None = None,
                 seed: int | None = None, desc: str = "generate") -> list[Generation]:
        """One completion request per row with the row's own settings; row i gets seed + i (rows differ, runs
        repeat where the server honours seeds). The server cuts the stop string off, as OpenAI's API does."""
        if len(prompts) != len(settings):
            raise ValueError(f"{len(prompts)} prompts but {len(settings)} sampling settings")

        def one(i: int) -> Generation:
            s = settings[i]
            fields = {"max_tokens": s.max_new_tokens, "temperature": s.temperature, "top_p": s.top_p,
                      "frequency_penalty": s.frequency_penalty, "presence_penalty": s.presence_penalty}
            if stop:
                fields["stop"] = stop
            if seed is not None:
                fields["seed"] = seed + i
            path, body = self._request(prompts[i], fields)
            data = self.pool.post(path, body)
            choice = data["choices"][0]
            text = (choice.get("message") or {}).get("content") if path == "/chat/completions" else choice.get("text")
            usage = data.get("usage") or {}
            return Generation(text or "", int(usage.get("completion_tokens") or 0))

        return self._map(one, list(range(len(prompts))))

    def option_logprobs(self, prompts: list[str], options: list[str], score_batch_size: int = 16,
                        desc: str = "score", reuse_prefix: bool = True) -> np.ndarray:
        """log P(option | prompt) from the answer token's `top_logprobs` of 1-token greedy completions.

        One request per prompt reads every option that is one token. An option of several tokens is followed
        piece by piece, each next request continuing from the prompt plus the pieces so far. The pieces are the
        option's own tokens where the model's tokenizer is on local disk (as in-process scoring splits it);
        otherwise the longest returned token that starts what is left of the option (no tokenizer needed, so any
        server works). A piece outside the returned top-k gets the floor (the k-th log-prob, an upper bound of its
        own) for the rest of the option, counted in `floored_cells`. Prompt log-probs (`echo`) are not used:
        llama-cpp-python 0.3.36 returns them shifted by one token. The server reuses the shared prefix (llama.cpp
        keeps the last prompt's cache); `score_batch_size` and `reuse_prefix` do not apply.

        A `ChatPrompt` asks its first request of the chat endpoint (`logprobs: true, top_logprobs: k`, the first
        answer token's alternatives); an option's later pieces continue from its text on the completions endpoint
        (see `ChatPrompt`). Labels of one token, as the shipped domains' yes/no and positive/negative, need none."""
        pieces = {o: self._pieces(o) for o in options}
        rows = self._map(lambda p: self._prompt_option_logprobs(p, pieces), prompts)
        return np.array(rows, dtype=float).reshape(len(prompts), len(options))

    def _pieces(self, option: str) -> list[str] | None:
        """The option's token texts by the local tokenizer, or None (unknown: found from the server's tokens)."""
        if self.tokenizer is None:
            return None
        pieces = [self.tokenizer.decode([i]) for i in self.tokenizer(option, add_special_tokens=False)["input_ids"]]
        return pieces if "".join(pieces) == option else None  # a character split across tokens: not readable

    def _prompt_option_logprobs(self, prompt: str, pieces: dict[str, list[str] | None]) -> list[float]:
        answers = {prompt: self._top_logprobs(prompt)}  # continuations already asked, shared by the options
        values, floored = [], 0
        for option, known in pieces.items():
            total, done, n = 0.0, "", 0  # log-prob so far, the option's text so far, pieces so far
            while len(done) < len(option):
                if prompt + done not in answers:
                    answers[prompt + done] = self._top_logprobs(prompt + done)
                top = answers[prompt + done]
                rest = option[len(done):]
                piece = known[n] if known else max((t for t in top if t and rest.startswith(t)), key=len, default=None)
                if piece not in top:
                    total, floored = total + min(top.values()), floored + 1
                    break
                total, done, n = total + top[piece], done + piece, n + 1
            values.append(total)
        with self.pool.lock:
            self.scored_cells += len(pieces)
            self.floored_cells += floored
        return values

    def _top_logprobs(self, prompt: str) -> dict[str, float]:
        """The next token's `top_logprobs` (token text -> log-prob) from a 1-token greedy completion (of the chat
        endpoint for a `ChatPrompt`: the answer's first token)."""
        chat = isinstance(prompt, ChatPrompt)
        k = self.top_k["/chat/completions" if chat else "/completions"]
        path, body = self._request(prompt, {"max_tokens": 1, "temperature": 0.0,
                                            **({"logprobs": True, "top_logprobs": k} if chat else {"logprobs": k})})
        try:
            answer = self.pool.post(path, body)
        except RequestRefused:
            smaller = [n for n in TOP_LOGPROBS_FALLBACK if n < k]
            if not smaller:
                raise
            self.top_k[path] = min(self.top_k[path], smaller[0])  # shared by later requests (threads agree)
            return self._top_logprobs(prompt)
        logprobs = answer["choices"][0].get("logprobs") or {}
        if chat:  # OpenAI's chat shape: content[i].top_logprobs is a list of {token, logprob}
            first = (logprobs.get("content") or [{}])[0] or {}
            top = {t["token"]: t["logprob"] for t in first.get("top_logprobs") or []}
        else:
            top = (logprobs.get("top_logprobs") or [None])[0]
        if not top:
            raise NoLogprobsError(
                f"model '{self.name}': the server returned no top_logprobs, so it cannot serve 'logprob' or 'label' "
                f"judges; use a server that returns log-probs (llama.cpp's server, vLLM), or judge kind 'generative'"
            )
        return {str(k): float(v) for k, v in top.items()}

    @property
    def floored_share(self) -> float:
        """Share of answer-token log-probs that fell outside the server's top-k and were given the floor."""
        return self.floored_cells / self.scored_cells if self.scored_cells else 0.0

    def stats(self) -> dict[str, float]:
        """Flat metrics for MLflow: `backend/<node>/<count>` per node, and the floored share of judge log-probs."""
        out = {f"backend/{node}/{key}": value for node, counts in self.pool.stats().items()
               for key, value in counts.items()}
        out["backend/logprob_floored_share"] = self.floored_share
        out["backend/top_logprobs"] = self.top_k["/completions"]
        out["backend/chat_top_logprobs"] = self.top_k["/chat/completions"]
        out["backend/chat_endpoint"] = float(self.chat_endpoint)
        return out
