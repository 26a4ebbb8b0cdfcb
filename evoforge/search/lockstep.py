"""Many searches at once with their model calls merged: `ask` with a search strategy runs one search per expert
(and the ask benchmark one per expert and question), batched across all of them.

Each search runs the unchanged strategy code (`evoforge.search.strategies`) in its own thread, against proxies of
the backends. A proxy's `generate` or `option_logprobs` blocks until every search still running has made its next
call (or ended); then the waiting calls that can share a batch run as one call of the real backend: `generate`
calls to the same backend with the same stop strings (each row keeps its own sampling settings; the lowest
search's seed drives the batch; at most `batch_rows` rows per call, as `expert_answers` chunks), and `option_logprobs` calls with the same options (the judges' labels: the
panel's valuing of partial texts). Calls that cannot share one (beam's log-probabilities, whose options are each
search's own texts) run one after another in the same round. So N searches cost about the model calls of one,
each N times wider. The threads only wait: one backend call runs at a time, in the thread that closed the round,
so the backends need not be thread-safe.
"""

import threading
from dataclasses import dataclass
from typing import Callable

import numpy as np

from evoforge.search.strategies import SearchResult


@dataclass(eq=False)
class _Call:
    search: int
    backend: str
    method: str
    args: tuple
    kwargs: dict
    result: object = None
    error: BaseException | None = None
    done: bool = False


class Lockstep:
    """The round keeper of `searches` searches over `backends` (name -> backend); `proxies(i)` are search i's."""

    def __init__(self, backends: dict, searches: int, batch_rows: int = 64):
        self.backends = backends
        self.batch_rows = batch_rows  # rows per merged `generate` (prefill logits of 288 rows took 7 GB: OOM)
        self.running = searches
        self.pending: list[_Call] = []
        self.cond = threading.Condition()
        self.batched_calls = 0  # real backend calls made (what the searches' calls cost after merging)
        self.requested_calls = 0  # calls the searches made

    def proxies(self, search: int) -> dict:
        return {name: LockstepProxy(self, search, name, backend) for name, backend in self.backends.items()}

    def call(self, search: int, backend: str, method: str, args: tuple, kwargs: dict):
        request = _Call(search, backend, method, args, kwargs)
        with self.cond:
            self.requested_calls += 1
            self.pending.append(request)
            self._close_round()
            while not request.done:
                self.cond.wait()
        if request.error is not None:
            raise request.error
        return request.result

    def finish(self) -> None:
        """A search has ended (or failed): the round no longer waits for it."""
        with self.cond:
            self.running -= 1
            self._close_round()

    def _close_round(self) -> None:
        if not self.pending or len(self.pending) < self.running:
            return
        calls, self.pending = sorted(self.pending, key=lambda c: c.search), []
        groups: dict[tuple, list[_Call]] = {}
        for c in calls:
            groups.setdefault(self._key(c), []).append(c)
        for group in groups.values():
            try:
                self._run(group)
            except BaseException as error:  # every search in the failed batch sees the error
                for c in group:
                    c.error = error
            for c in group:
                c.done = True
        self.cond.notify_all()

    @staticmethod
    def _key(c: _Call) -> tuple:
        if c.method == "generate":
            return c.backend, "generate", tuple(c.kwargs.get("stop") or ())
        if c.method == "option_logprobs":
            return c.backend, "option_logprobs", tuple(c.args[1]), c.kwargs.get("score_batch_size"), \
                c.kwargs.get("reuse_prefix", True)
        return c.backend, c.method, id(c)  # never merged

    def _run(self, group: list[_Call]) -> None:
        backend = self.backends[group[0].backend]
        first = group[0]
        self.batched_calls += 1
        if first.method == "generate":
            prompts = [p for c in group for p in c.args[0]]
            settings = [s for c in group for s in c.args[1]]
            step = self.batch_rows
            outs = [o for start in range(0, len(prompts), step)
                    for o in backend.generate(prompts[start : start + step], settings[start : start + step],
                                              **first.kwargs)]
            self._split(group, outs, lambda c: len(c.args[0]))
        else:
            prompts = [p for c in group for p in c.args[0]]
            out = backend.option_logprobs(prompts, first.args[1], **first.kwargs)
            self._split(group, np.asarray(out), lambda c: len(c.args[0]))

    @staticmethod
    def _split(group: list[_Call], outs, size: Callable) -> None:
        start = 0
        for c in group:
            c.result = outs[start : start + size(c)]
            start += size(c)


class LockstepProxy:
    """A backend whose `generate` and `option_logprobs` wait for the round (see `Lockstep`); anything else is the
    backend's own (chat_prompt, name, ...)."""

    def __init__(self, lockstep: Lockstep, search: int, name: str, backend):
        self._lockstep, self._search, self._name, self._backend = lockstep, search, name, backend

    def generate(self, prompts, settings, stop=None, seed=None, desc="generate"):
        return self._lockstep.call(self._search, self._name, "generate", (list(prompts), list(settings)),
                                   {"stop": stop, "seed": seed, "desc": desc})

    def option_logprobs(self, prompts, options, score_batch_size=None, desc="score", reuse_prefix=True):
        return self._lockstep.call(self._search, self._name, "option_logprobs", (list(prompts), list(options)),
                                   {"score_batch_size": score_batch_size, "desc": desc, "reuse_prefix": reuse_prefix})

    def __getattr__(self, name):
        return getattr(self._backend, name)


def run_in_lockstep(backends: dict, searches: list[Callable[[dict], SearchResult]],
                    batch_rows: int = 64) -> tuple[list, Lockstep]:
    """Run every search (a function of its backends' proxies) in lockstep; their results in order, and the
    lockstep (its call counts). The first search's error, if any, is raised once all have ended."""
    lockstep = Lockstep(backends, len(searches), batch_rows)
    results: list = [None] * len(searches)
    errors: list = [None] * len(searches)

    def run(i: int) -> None:
        try:
            results[i] = searches[i](lockstep.proxies(i))
        except BaseException as error:
            errors[i] = error
        finally:
            lockstep.finish()

    threads = [threading.Thread(target=run, args=(i,), name=f"search-{i}", daemon=True) for i in range(len(searches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for error in errors:
        if error is not None:
            raise error
    return results, lockstep
