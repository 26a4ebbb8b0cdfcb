"""Starting llama.cpp's OpenAI-compatible server (`llama-cpp-python[server]`, built by `make llama-server` into its
own venv) on a loopback port, for the server tests and the server benchmark.

It serves a GGUF file as it is (the embedded SmolLM2 Q4_1), with `logits_all` on: llama-cpp-python returns no
log-probs at all without it (and judges read the answer token's `top_logprobs`).
"""

import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

DEFAULT_VENV = Path(__file__).resolve().parent.parent / ".venv-llama"


class ServerUnavailable(RuntimeError):
    """The llama.cpp server is not installed here, or did not start (the reason says which)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LlamaServer:
    process: subprocess.Popen
    port: int
    log: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def answered(self, path: str) -> int:
        """Requests it answered on `path` (e.g. '/chat/completions'), counted in its access log."""
        return self.log.read_text(errors="replace").count(f'"POST /v1{path} HTTP/1.1" 200')

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def llama_python(venv: Path = DEFAULT_VENV) -> Path:
    """The server venv's Python, or ServerUnavailable saying how to build it."""
    python = Path(venv) / "bin" / "python"
    if not (Path(venv) / ".installed").is_file() or not python.is_file():
        raise ServerUnavailable(f"llama.cpp server not built ({venv}/.installed is missing): run `make llama-server`")
    return python


def start_llama_server(gguf: Path, alias: str, log: Path, venv: Path = DEFAULT_VENV, threads: int = 1, n_ctx: int = 2048,
                       startup_timeout_s: float = 120.0) -> LlamaServer:
    """Start one server process on a free loopback port, serving `gguf` under the model name `alias`, and wait
    until it answers GET /v1/models."""
    port = free_port()
    command = [str(llama_python(venv)), "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1",
               "--port", str(port), "--n_ctx", str(n_ctx), "--n_threads", str(threads),
               "--n_threads_batch", str(threads), "--logits_all", "True", "--model_alias", alias]
    handle = open(log, "ab")
    # Its own process group: stopping it never signals the test process. Unbuffered, so its access log (which
    # endpoint answered each request) can be read while it runs.
    process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
                               env={**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"})
    handle.close()
    server = LlamaServer(process, port, Path(log))
    deadline = time.monotonic() + startup_timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerUnavailable(f"llama.cpp server exited with code {process.returncode}: "
                                    f"{Path(log).read_text(errors='replace')[-800:]}")
        try:
            if httpx.get(f"{server.base_url}/models", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    server.stop()
    raise ServerUnavailable(f"llama.cpp server did not answer within {startup_timeout_s:.0f} s: "
                            f"{Path(log).read_text(errors='replace')[-800:]}")
