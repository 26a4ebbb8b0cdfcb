"""`ask`'s answers written with a search strategy (`TournamentConfig.strategy`: beam, tot or mcts over sentences,
`evoforge.search.strategies`) instead of one sample per expert.

Every expert's search runs at once, in lockstep (`evoforge.search.lockstep`): each step of all the searches is one
batched model call (and one batched judging call), not one per expert. tot and mcts value partial answers by the
tournament's judges' panel (the mean of its question scores: relevance and coherence), asked through the same
lockstep; beam ranks by the model's own log-probability. An answer's `new_tokens` counts every token its search
generated (expansions and rollouts), as a run's tree-searched candidates do.
"""

from functools import partial
from typing import Callable

import numpy as np
import pandas as pd

from evoforge.core.prompts import trim_to_last_sentence, without_list_marker
from evoforge.search.lockstep import run_in_lockstep
from evoforge.search.strategies import Values
from evoforge.search.tree_writing import search_prompt


def panel_values(panel, backends: dict, questions: dict | None = None) -> Values:
    """Texts -> the panel's mean question score (what `ask`'s judges call `score`), on the panel's own questions
    or on `questions` (name -> Question: another task's, as the benchmark's many tasks need)."""

    def values(texts: list[str]) -> np.ndarray:
        asked = {name: [q] * len(texts) for name, q in questions.items()} if questions else None
        return panel.judge(backends, texts, asked)[list(panel.columns.values())].mean(axis=1).to_numpy()

    return values


def searched_answers(backends: dict, experts: list, jobs: list[tuple[int, str]], seed: int, listed: bool = False, *,
                     strategy: str, tree, panel=None, questions: Callable[[str], dict] | None = None) -> pd.DataFrame:
    """`expert_answers`' frame (one row per job (expert id, prompt), in job order) with each answer searched by
    `strategy` with the settings `tree`, plus `strategy`, `strategy_score` (the search's own score of its text)
    and `model_calls` (the calls the search made before merging). `frame.attrs['batched_calls']`: the backend
    calls all searches made together. `questions` (prompt -> the judges' questions about it) where the jobs'
    prompts are different tasks; default: the panel's own."""

    def search(j: int) -> Callable[[dict], tuple]:
        expert_id, task = jobs[j]
        expert = experts[expert_id]

        def run(proxies: dict):
            backend = proxies[expert.backend]
            prompt = backend.chat_prompt(task, system=expert.system_prompt)
            values = panel_values(panel, proxies, questions(task) if questions else None) \
                if panel is not None else None
            return search_prompt(strategy, backend, prompt, expert.sampling, tree, values, seed + j)

        return run

    results, lockstep = run_in_lockstep(backends, [search(j) for j in range(len(jobs))])
    rows = []
    for j, ((expert_id, _), (result, tokens)) in enumerate(zip(jobs, results)):
        text = without_list_marker(result.text.strip()) if listed else result.text.strip()
        rows.append({"job": j, "expert_id": expert_id, "backend": experts[expert_id].backend,
                     "text": trim_to_last_sentence(text), "new_tokens": tokens, "continued": False,
                     "strategy": strategy, "strategy_score": result.score,
                     "model_calls": result.expand_calls + result.value_calls})
    frame = pd.DataFrame(rows)
    frame.attrs["batched_calls"] = lockstep.batched_calls
    return frame


def ensembled_answers(backends: dict, experts: list, jobs: list[tuple[int, str]], seed: int, listed: bool = False, *,
                      max_new_tokens: int) -> pd.DataFrame:
    """`expert_answers`' frame where the jobs to one task on one backend write one answer together, decoded from
    their averaged next-token distributions (`models.token_ensemble`, each job's expert a row with its persona and
    sampling settings; every task in one batched call): each of those jobs' rows holds that answer, and its
    `new_tokens` the answer's length (the positions its row decoded)."""
    from models.token_ensemble import ensemble_generate

    rows = []
    for name in sorted({experts[i].backend for i, _ in jobs}):
        backend = backends[name]
        mine = [j for j, (i, _) in enumerate(jobs) if experts[i].backend == name]
        tasks = list(dict.fromkeys(jobs[j][1] for j in mine))
        done = ensemble_generate(backend, [backend.chat_prompt(jobs[j][1], system=experts[jobs[j][0]].system_prompt)
                                           for j in mine],
                                 [experts[jobs[j][0]].sampling for j in mine], max_new_tokens,
                                 groups=[tasks.index(jobs[j][1]) for j in mine], seed=seed)
        for j in mine:
            answer = done[tasks.index(jobs[j][1])]
            text = without_list_marker(answer.text) if listed else answer.text
            rows.append({"job": j, "expert_id": jobs[j][0], "backend": name, "text": trim_to_last_sentence(text),
                         "new_tokens": answer.new_tokens, "continued": False, "ensemble": "tokens"})
    return pd.DataFrame(rows).sort_values("job", ignore_index=True)


def answer_writer(config, panel=None) -> Callable | None:
    """What writes `ask`'s answers (`TournamentConfig.strategy` and `ensemble`): None for one sample per expert."""
    if config.ensemble == "tokens":
        return partial(ensembled_answers, max_new_tokens=config.max_new_tokens)
    return answer_search(config.strategy, config.tree, panel)


def answer_search(strategy: str, tree, panel=None, questions: Callable[[str], dict] | None = None) -> Callable | None:
    """What writes `ask`'s answers for `strategy`: None for 'sample' (one batched sample per expert, as before)."""
    if strategy == "sample":
        return None
    return partial(searched_answers, strategy=strategy, tree=tree, panel=panel, questions=questions)
