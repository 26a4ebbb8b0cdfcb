"""The mixture-of-experts tournament: answer one task with the best of many experts.

Each iteration: the experts answer (one batched call per backend, one continuation for cut-off answers; with
`layers` > 1, Mixture-of-Agents: each later layer's experts read the previous layer's answers and write improved
ones, and the last layer's answers go on), the judges
score every answer for relevance and coherence, the configured selection (`evoforge.judges.selection`: judges, consensus,
verifier or stacked) picks an answer (or, with a decaying exploration rate, another), a reward judge labels it
("highly effective" ... "bad" -> 1.0 ... 0.0), an optional external reward is added, and the expert values learn:
by default every answering expert from whether its answer agrees with the selected one. It stops once
`min_iterations` are done and the total reward over iterations reaches `reward_threshold`, or after
`max_iterations`. The kept answer is the selection over all answers of all iterations. The experts and their values
are saved, so the next task starts from what this one learnt.
"""

import json
from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from evoforge.judges.calibration import CONTENT_FREE_TEXTS, contextual
from evoforge.core.config import TournamentConfig, judge_models
from evoforge.core.domain import Question
from evoforge.core.experts import Expert, exploration_rate, pick_experts, random_experts, update_value
from evoforge.search.generation import complete
from evoforge.steps.ask_search import answer_writer
from evoforge.judges.panel import Panel, fit_panel
from evoforge.core.prompts import aggregate_prompt, trim_to_last_sentence, without_list_marker
from evoforge.judges.selection import (Consensus, Selector, agreement_reward, expert_weights, fit_selector,
                                       verifier_scores)
from evoforge.core.store import living, write_json, write_parquet
from evoforge.steps.ask_routing import record_task_credit, routed_experts
from evoforge.knowledge.base import KnowledgeBase, Passage, open_base
from evoforge.knowledge.records import RECORDS_FILE, record, source_list, sources_markdown, write_records
from evoforge.knowledge.summarize import condense
from models.backend import Backend

SPEC_PATH = Path(__file__).resolve().parents[2] / "data" / "tournament.yaml"


@dataclass(frozen=True)
class TournamentSpec:
    """What `data/tournament.yaml` holds: personas, the judges' questions and the reward judge's labels."""

    personas: list[str]
    questions: dict[str, dict]  # name -> {labels, instructions}; `{task}` in an instruction is the task
    reward_instruction: str  # with `{task}` and `{answer}`
    reward_labels: dict[str, float]
    grounded: dict | None = None  # {labels, instructions} with `{passages}` and `{task}`: asked with a knowledge base


def load_spec(path: Path = SPEC_PATH) -> TournamentSpec:
    raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    return TournamentSpec(raw["personas"], raw["questions"], raw["reward"]["instruction"],
                          {str(k): float(v) for k, v in raw["reward"]["labels"].items()}, raw.get("grounded"))


def task_text(instruction: str, context: str = "") -> str:
    return f"{instruction.strip()}\n\nContext: {context.strip()}" if context.strip() else instruction.strip()


def task_questions(spec: TournamentSpec, task: str, passages: str = "") -> dict[str, Question]:
    """The judges' questions about answers to `task` (str.replace, not format: a task may contain braces); with
    retrieved `passages`, also whether the answer is grounded in them."""
    asked = {**spec.questions, "grounded": spec.grounded} if passages and spec.grounded else spec.questions
    return {
        name: Question(labels=tuple(q["labels"]),
                       instructions=[i.replace("{passages}", passages).replace("{task}", task) for i in q["instructions"]])
        for name, q in asked.items()
    }


@dataclass(frozen=True)
class Retrieval:
    """What a knowledge base gave for a task: the passages (cited as [n], in this order) and their condensed text,
    which the experts read and the groundedness question quotes."""

    passages: list[Passage]
    context: str

    def prompt(self, task: str) -> str:
        """The task with the passages before it (a small model follows what it read last: the task)."""
        return f"Passages:\n{self.context}\n\nAnswer using the passages above.\n{task}"


def retrieve(kb: KnowledgeBase, query: str, k: int, budget_chars: int) -> Retrieval:
    """The k passages most similar to the query, condensed to `budget_chars` (evoforge.knowledge.summarize)."""
    passages = kb.search(query, k)
    return Retrieval(passages, condense(kb, query, passages, budget_chars))


def load_population(path: str | Path) -> list[Expert]:
    """Experts from a Parquet file: a saved tournament population, or an evolution run's experts.parquet (its last
    generation)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"population: {path} does not exist; pass an experts.parquet file or leave it empty")
    frame = pd.read_parquet(path)
    if "generation" in frame:
        frame = living(frame[frame["generation"] == frame["generation"].max()])
    experts = [Expert.from_row(row) for row in frame.to_dict("records")]
    for i, expert in enumerate(experts):  # ids index the value array
        expert.expert_id = i
    return experts


class TournamentState:
    """One tournament in progress: the experts, the answers so far and the reward bookkeeping. The steps read it
    and return what they made; `commit_iteration` alone applies an iteration's outcome."""

    def __init__(self, config: TournamentConfig, spec: TournamentSpec, experts: list[Expert], root: Path,
                 retrieval: Retrieval | None = None):
        self.config = config
        self.spec = spec
        self.experts = experts
        self.root = root
        self.task = task_text(config.instruction, config.context)
        self.retrieval = retrieval
        self.prompt = retrieval.prompt(self.task) if retrieval else self.task  # what the experts read
        self.questions = task_questions(spec, self.task, retrieval.context if retrieval else "")
        self.selector: Selector = fit_selector(
            config.selection, Consensus(config.consensus_similarity, config.consensus_threshold))
        self.answers: list[pd.DataFrame] = []  # one frame per iteration
        self.iterations: list[dict] = []  # one record per iteration
        self.total_reward = 0.0
        self.mlflow_run_id: str | None = None  # kept in the progress file, so a resumed ask logs to the same run
        self.panel: Panel | None = None  # the judges, once fitted: tot and mcts value partial answers with them

    @property
    def values(self) -> np.ndarray:
        return np.array([e.value for e in self.experts])

    @property
    def model_names(self) -> list[str]:
        return sorted({e.backend for e in self.experts} | judge_models(self.config.judges) | {self.config.reward_model})


def prepare_tournament(config: TournamentConfig, spec: TournamentSpec | None = None) -> TournamentState:
    """The run folder and the experts: a given population, else the saved one, else random experts."""
    spec = spec or load_spec()
    rng = np.random.default_rng([config.seed, 2**31])
    source = config.population or (config.population_file if Path(config.population_file).is_file() else None)
    if source:
        experts = load_population(source)
    else:
        experts = random_experts(config.experts, config.generator_models, config.sampling_ranges(), spec.personas,
                                 spec.personas, rng, shots=0)
    name = config.run_name or "ask-" + datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    root = Path(config.out) / name
    progress = read_progress(root, config) if config.run_name else None  # only a named ask resumes
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps(config.model_dump(mode="json"), indent=2))
    retrieval = None
    if config.kb:
        retrieval = retrieve(open_base(config.kb), task_text(config.instruction, config.context), config.kb_k,
                             config.kb_context_chars)
    if progress is None:
        return TournamentState(config, spec, experts, root, retrieval)
    # Resume: the experts as the last committed iteration left them, and every committed iteration's answers.
    state = TournamentState(config, spec, [Expert.from_row(row) for row in progress["experts"]], root, retrieval)
    state.iterations, state.total_reward = progress["iterations"], progress["total_reward"]
    state.answers = [pd.read_parquet(answers_part(root, k)) for k in range(len(state.iterations))]
    state.mlflow_run_id = progress["mlflow_run_id"]
    return state


PROGRESS = "progress.json"  # the commit point of an iteration: experts, total reward, records, the MLflow run


def answers_part(root: Path, iteration: int) -> Path:
    return root / "iterations" / f"answers-{iteration:04d}.parquet"


def read_progress(root: Path, config: TournamentConfig) -> dict | None:
    """The committed progress of the tournament in `root`, or None for a new one. A folder that holds another
    task's tournament is refused (its answers would be mixed with this task's)."""
    path = root / PROGRESS
    if not path.is_file():
        return None
    saved = json.loads((root / "config.json").read_text())
    if (saved["instruction"], saved["context"]) != (config.instruction, config.context):
        raise ValueError(f"run_name: {root.name!r} in {root.parent} is a tournament for another task; pick another "
                         "run_name (or none, for a new one) to ask this task")
    return json.loads(path.read_text())


def next_iteration(state: TournamentState) -> int:
    """Where the iterations start: 0, after the last committed one when resuming, or past the end when the
    resumed tournament had already met its stopping rule."""
    done = len(state.iterations)
    if done and should_stop(state.config, done - 1, state.total_reward):
        return state.config.max_iterations
    return done


def fit_tournament_judges(state: TournamentState, backends: dict[str, Backend]) -> Panel:
    """A free-form task has no reference labels: the panel combines raw (or contextually calibrated) scores."""
    state.panel = fit_panel(backends, state.config.judges, state.questions, state.config.combine)
    return state.panel


def epsilon(state: TournamentState, iteration: int) -> float:
    v = state.config.values
    return exploration_rate(iteration, v.epsilon_start, v.epsilon_decay, v.epsilon_min)


def expert_answers(backends: dict, experts: list[Expert], jobs: list[tuple[int, str]], continue_tokens: int,
                   seed: int, batch_size: int | None = None, listed: bool = False, search=None) -> pd.DataFrame:
    """Each job (expert id, task) answered by its expert: one batched call per backend (in chunks of `batch_size`
    rows), one continuation for cut-off answers. Many tasks batch together (the benchmark answers every question
    at once). `listed`: the prompts showed numbered references, and a list marker copied from them is dropped.
    One row per job, in job order, with the job's position as `job`. `search` (evoforge.steps.ask_search): each
    answer written by a search strategy instead, all jobs' searches batched together."""
    if search is not None:
        return search(backends, experts, jobs, seed, listed)
    rows = []
    for name in sorted({experts[i].backend for i, _ in jobs}):
        backend = backends[name]
        mine = [j for j, (i, _) in enumerate(jobs) if experts[i].backend == name]
        step = batch_size or len(mine)
        for start in range(0, len(mine), step):
            chunk = mine[start : start + step]
            prompts = [backend.chat_prompt(jobs[j][1], system=experts[jobs[j][0]].system_prompt) for j in chunk]
            settings = [experts[jobs[j][0]].sampling for j in chunk]
            done = complete(backend, prompts, settings, continue_tokens, seed=seed + start)
            for j, (text, tokens, continued) in zip(chunk, done):
                text = without_list_marker(text) if listed else text
                rows.append({"job": j, "expert_id": jobs[j][0], "backend": name, "text": trim_to_last_sentence(text),
                             "new_tokens": tokens, "continued": continued})
    return pd.DataFrame(rows).sort_values("job", ignore_index=True)


def layer_prompt(task: str, previous: list[str], max_chars: int) -> str:
    """A later layer's prompt: the previous layer's distinct answers, bounded to `max_chars`, then the task last
    (`aggregate_prompt`). Without previous answers, the task alone."""
    return aggregate_prompt(previous, max_chars, "Answers from other experts (some may be wrong):",
                            f"Using what is right in them, write one better answer.\n{task}") or task


LAYER_SEED_STEP = 1_000_000  # layer k > 1 generates with seed + (k - 1) * this: layer 1 keeps a one-layer seed


def layered_answers(backends: dict, experts: list[Expert], jobs: list[tuple[int, str]], layers: int,
                    context_chars: int, continue_tokens: int, seed: int, batch_size: int | None = None,
                    search=None) -> pd.DataFrame:
    """Each job (expert id, task) answered in `layers` layers: layer 1 answers the task; in layer k every job's
    expert reads the layer k-1 answers to the same task (all experts' answers, `layer_prompt`) and writes an
    improved one. One batched `expert_answers` call per layer for all tasks together. One row per job and layer,
    with `job` and `layer` (1..layers)."""
    frames, prompts = [], [task for _, task in jobs]
    for layer in range(1, layers + 1):
        done = expert_answers(backends, experts, [(i, p) for (i, _), p in zip(jobs, prompts)], continue_tokens,
                              seed=seed + (layer - 1) * LAYER_SEED_STEP, batch_size=batch_size, listed=layer > 1,
                              search=search)
        frames.append(done.assign(layer=layer))
        by_task = defaultdict(list)
        for (_, task), text in zip(jobs, done["text"]):  # done is in job order
            by_task[task].append(text)
        prompts = [layer_prompt(task, by_task[task], context_chars) for _, task in jobs]
    return pd.concat(frames, ignore_index=True)


def last_layer(answers: pd.DataFrame) -> pd.DataFrame:
    """The answers of the last layer (those judged against each other and selected from); records written
    before layers existed hold one layer."""
    return answers[answers["layer"] == answers["layer"].max()] if "layer" in answers else answers


def answer_step(state: TournamentState, iteration: int, backends: dict) -> pd.DataFrame:
    """The answering experts (all, or `answering` of them picked by value) each write one answer, in
    `config.layers` layers (`layered_answers`); every layer's answers are returned, marked with `layer`."""
    config = state.config
    rng = np.random.default_rng([config.seed, iteration])
    k = len(state.experts) if config.answering is None else min(config.answering, len(state.experts))
    scores = state.values if config.routing == "none" else routed_experts(config, state.task, len(state.experts))
    picked = sorted(pick_experts(scores, k, epsilon(state, iteration), rng))
    answers = layered_answers(backends, state.experts, [(i, state.prompt) for i in picked], config.layers,
                              config.layer_context_chars, config.continue_tokens, seed=config.seed * 1000 + iteration,
                              search=answer_writer(config, state.panel))
    columns = ["iteration", "layer", "expert_id", "backend", "text", "new_tokens", "continued"]
    return answers.drop(columns="job").assign(iteration=iteration)[
        columns + [c for c in ("strategy", "strategy_score", "model_calls", "ensemble") if c in answers]]


def judge_step(state: TournamentState, panel: Panel, answers: pd.DataFrame, backends: dict[str, Backend]) -> pd.DataFrame:
    """Every judge scores every answer (of every layer, one batched call: the per-layer scores show whether reading
    peers helped) on every question (`score`: the mean of the panel's question scores), and the selection's
    features are added, among each layer's answers: consensus (`cluster`, `agreement`, `centrality`), the vote,
    the expert weights and, for the verifier and stacked selections, the verifier's P(correct)."""
    scores = panel.judge(backends, answers["text"].tolist())
    scores.index = answers.index
    judged = answers.join(scores)
    judged["score"] = judged[list(panel.columns.values())].mean(axis=1)
    if "layer" not in judged:
        return with_features(state, judged, backends)
    return pd.concat([with_features(state, group, backends) for _, group in judged.groupby("layer", sort=True)]
                     ).loc[judged.index]


def with_features(state: TournamentState, judged: pd.DataFrame, backends: dict) -> pd.DataFrame:
    """The selection's features for these answers (consensus among them; each answer's expert weight from the
    experts' current values; the verifier's score where needed)."""
    texts = judged["text"].tolist()
    verifier_raw = None
    if state.selector.verifies:
        verifier_raw = (judged["verifier_raw"] if "verifier_raw" in judged else
                        verifier_scores(backends[state.config.reward_model], [state.task] * len(texts), texts))
    weights = expert_weights(state.values)[judged["expert_id"].to_numpy(dtype=int)]
    features = state.selector.features(texts, state.task, judged["score"], verifier_raw, weights=weights)
    features.index = judged.index
    return judged.drop(columns=[c for c in features if c in judged]).join(features)


def select_answer(scores: np.ndarray, epsilon: float, rng: np.random.Generator,
                  best: int | None = None) -> tuple[int, bool]:
    """The answer the selection keeps (`best`; by default the best-scored one); with probability `epsilon` another
    one instead (exploration). Unscored (NaN) answers are never explored to while a scored one exists."""
    scores = np.asarray(scores, dtype=float)
    ranked = np.where(np.isnan(scores), -np.inf, scores)
    best = int(np.argmax(ranked)) if best is None else int(best)
    others = [i for i in range(len(scores)) if i != best and np.isfinite(ranked[i])]
    if others and rng.random() < epsilon:
        return others[int(rng.integers(len(others)))], True
    return best, False


def reward_label(backend, spec: TournamentSpec, task: str, answer: str,
                 calibrate: bool = True) -> tuple[str, float, dict[str, float]]:
    """The reward judge's label for an answer: the most likely label, its reward, and every label's probability.

    A small judge rates nearly anything "highly effective" (the 135M model gives "N/A" 0.93), so by default the
    probabilities are divided by those it gives content-free answers and renormalised (contextual calibration):
    what is left is how much this answer moves the judge."""
    labels = list(spec.reward_labels)
    texts = [answer, *CONTENT_FREE_TEXTS] if calibrate else [answer]
    prompts = [backend.chat_prompt(spec.reward_instruction.replace("{task}", task).replace("{answer}", t))
               for t in texts]
    logprobs = backend.option_logprobs(prompts, labels, desc="reward judge")
    probs = np.exp(logprobs - logprobs.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    p = contextual(probs[0], probs[1:].mean(axis=0)) if calibrate else probs[0]
    label = labels[int(np.argmax(p))]
    return label, spec.reward_labels[label], dict(zip(labels, p.round(4).tolist()))


def external_reward_from_file(path: str | Path, iteration: int) -> float | None:
    """Line `iteration` (0-based) of a text file of rewards; a missing or blank line means no external reward."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    if iteration >= len(lines) or not lines[iteration].strip():
        return None
    try:
        return float(lines[iteration])
    except ValueError:
        raise ValueError(f"external_reward_file {path} line {iteration + 1}: expected a number, "
                         f"got {lines[iteration]!r}") from None


def external_reward(config: TournamentConfig, iteration: int) -> float | None:
    """The external reward from the config's flag or file (a person's reward from the UI comes via the flow)."""
    if config.external_reward_file:
        return external_reward_from_file(config.external_reward_file, iteration)
    return config.external_reward


def learn_values(config: TournamentConfig, values: np.ndarray, judged: pd.DataFrame, kept: int, row: int,
                 reward: float, external: float | None) -> np.ndarray:
    """The experts' new values after one iteration. `agreement`: every answering expert learns whether its answer
    says what the selection's pick `kept` says (1 or 0; not an explored answer, which would teach chance), and a
    person's reward is added for the expert whose answer `row` they rated; over many tasks values rank experts by
    how often they agree with the consensus. `reward`: only the selected expert learns, from the reward judge's
    label plus the external reward."""
    lr, discount = config.values.learning_rate, config.values.discount
    if config.value_signal == "reward":
        return update_value(values, int(judged["expert_id"].iloc[row]), reward, lr, discount)
    agree = agreement_reward(judged["cluster"].to_numpy(), kept)
    for i, expert_id in enumerate(judged["expert_id"]):
        bonus = (external or 0.0) if i == row else 0.0
        values = update_value(values, int(expert_id), float(agree[i]) + bonus, lr, discount)
    return values


@dataclass(frozen=True)
class IterationOutcome:
    """What one iteration produced: its answers with the selection and reward marked, the record for the log, and
    the experts after learning (values, picks)."""

    answers: pd.DataFrame
    record: dict
    experts: list[Expert]


def reward_step(state: TournamentState, judged: pd.DataFrame, iteration: int, backends: dict[str, Backend],
                external: float | None) -> IterationOutcome:
    """Select an answer of the last layer, have it labelled, add the external reward and learn the expert values
    (learn_values). The outcome's answers are every layer's."""
    config = state.config
    rng = np.random.default_rng([config.seed, iteration, 1])
    eps = epsilon(state, iteration)
    final = last_layer(judged)
    kept = state.selector.pick(final.reset_index(drop=True))
    row, explored = select_answer(final["score"].to_numpy(), eps, rng, best=kept)
    chosen = final.iloc[row]
    label, intrinsic, probs = reward_label(backends[config.reward_model], state.spec, state.task, chosen["text"],
                                           calibrate=config.reward_calibration == "contextual")
    reward = intrinsic + (external or 0.0)
    expert_id = int(chosen["expert_id"])
    values = learn_values(config, state.values, final, kept, row, reward, external)
    experts = [replace(e, value=float(v), picks=e.picks + (e.expert_id == expert_id))
               for e, v in zip(state.experts, values)]
    judged = judged.assign(selected=judged.index == final.index[row], reward_label=None, reward=np.nan)
    judged.loc[final.index[row], ["reward_label", "reward"]] = [label, reward]
    record = {
        "iteration": iteration, "expert_id": expert_id, "explored": bool(explored), "epsilon": float(eps),
        "score": float(chosen["score"]), "reward_label": label, "intrinsic_reward": intrinsic,
        "external_reward": external, "reward": reward, "total_reward": state.total_reward + reward,
        "label_probabilities": probs, "values": values.tolist(),
    }
    return IterationOutcome(judged, record, experts)


def commit_iteration(state: TournamentState, outcome: IterationOutcome) -> None:
    """Apply an iteration's outcome to the tournament and make it durable: the iteration's answers as a Parquet
    part, then the progress file (experts, total reward, records), each written atomically. The progress file is
    the commit point: an `ask` killed at any moment resumes (same run_name) after its last committed iteration."""
    state.experts = outcome.experts
    state.total_reward = outcome.record["total_reward"]
    state.answers.append(outcome.answers)
    state.iterations.append(outcome.record)
    write_parquet(outcome.answers, answers_part(state.root, len(state.iterations) - 1))
    write_json({"iterations": state.iterations, "experts": [e.to_row() for e in state.experts],
                "total_reward": state.total_reward, "mlflow_run_id": state.mlflow_run_id}, state.root / PROGRESS)


def should_stop(config: TournamentConfig, iteration: int, total_reward: float) -> bool:
    done = iteration + 1
    return done >= config.max_iterations or (done >= config.min_iterations and total_reward >= config.reward_threshold)


def iteration_metrics(record: dict, judged: pd.DataFrame) -> dict[str, float]:
    """An iteration's MLflow metrics, from its record and its judged answers alone (so a resumed ask can log a
    committed iteration whose metrics the kill cut off)."""
    metrics = {k: float(record[k]) for k in ("score", "intrinsic_reward", "reward", "total_reward", "epsilon")}
    metrics["external_reward"] = float(record["external_reward"] or 0.0)
    metrics["explored"] = float(record["explored"])
    final = last_layer(judged)
    metrics["best_score"] = float(final["score"].max())
    metrics["mean_score"] = float(final["score"].mean())
    metrics["new_tokens"] = float(judged["new_tokens"].sum())  # every layer's: the iteration's generation cost
    if "layer" in judged:  # does reading the previous layer raise the judges' scores, agreement, length?
        for layer, group in judged.groupby("layer"):
            metrics[f"layer/{layer}/mean_score"] = float(group["score"].mean())
            metrics[f"layer/{layer}/agreement"] = float(group["agreement"].mean())
            metrics[f"layer/{layer}/new_tokens"] = float(group["new_tokens"].sum())
    metrics.update({f"expert/{i}/value": float(v) for i, v in enumerate(record["values"])})  # ids index values
    return metrics


def best_answer(state: TournamentState, answers: pd.DataFrame) -> int:
    """The kept answer's row (an index label of `answers`): the selection over every last-layer answer of every
    iteration (more answers, a firmer consensus than any one iteration's)."""
    final = last_layer(answers)
    return int(final.index[state.selector.pick(with_features(state, final.reset_index(drop=True), {}))])


def tournament_summary(state: TournamentState, panel: Panel | None = None, backends: dict | None = None) -> dict:
    """Keep one answer out of all, write answers and experts as Parquet, save the population for the next ask,
    and summarise. A kept answer that no iteration selected is labelled by the reward judge here (with backends)."""
    answers = pd.concat(state.answers, ignore_index=True).assign(task=state.task)  # a knowledge source needs it
    row = best_answer(state, answers)
    answers["kept"] = answers.index == row
    if state.config.routing == "router":  # the router's credit for this task (evoforge.steps.ask_routing)
        record_task_credit(state.config, state.selector.consensus, state.task, last_layer(answers),
                           answers.at[row, "text"])
    if pd.isna(answers.at[row, "reward"]) and backends:
        label, intrinsic, _ = reward_label(backends[state.config.reward_model], state.spec, state.task,
                                           answers.at[row, "text"],
                                           calibrate=state.config.reward_calibration == "contextual")
        answers.loc[row, ["reward_label", "reward"]] = [label, intrinsic]
    best = answers.loc[row]
    answers_path = write_parquet(answers, state.root / "answers.parquet")
    experts = pd.DataFrame([e.to_row() for e in state.experts])
    experts_path = write_parquet(experts, state.root / "experts.parquet")
    population = Path(state.config.population_file)
    population.parent.mkdir(parents=True, exist_ok=True)
    write_parquet(experts, population)
    iterations = pd.DataFrame(state.iterations).drop(columns=["label_probabilities", "values"])
    write_parquet(iterations, state.root / "iterations.parquet")
    score_columns = [c for c in (panel.columns.values() if panel else []) if c in best]
    summary = {
        "run_dir": str(state.root), "task": state.task, "answer": best["text"],
        "expert_id": int(best["expert_id"]), "reward_label": best["reward_label"] or "not rated",
        "reward": float(best["reward"]), "selection": state.config.selection,
        "scores": {c: round(float(best[c]), 4) for c in [*score_columns, "score"]},
        "iterations": len(state.iterations), "total_reward": state.total_reward,
        "values": {e.expert_id: round(e.value, 4) for e in state.experts},
        "answers_path": str(answers_path), "experts_path": str(experts_path), "population_file": str(population),
        "sources": source_list(state.retrieval.passages) if state.retrieval else [],
    }
    sources = f"\n# Sources\n\n{sources_markdown(summary['sources'])}\n" if summary["sources"] else ""
    (state.root / "best_answer.md").write_text(
        f"# Task\n\n{state.task}\n\n# Best answer (expert {summary['expert_id']}, {summary['reward_label']})\n\n"
        f"{summary['answer']}\n\n# Scores\n\n{json.dumps(summary['scores'], indent=2)}\n{sources}"
    )
    write_records([record(state.task, summary["sources"], summary["answer"], summary["reward"], "ask", state.root.name,
                          state.retrieval.context if state.retrieval else "")], state.root / RECORDS_FILE)
    return summary


def summary_markdown(summary: dict) -> str:
    """The tournament's result for the Prefect UI: the task, the kept answer, its scores and the expert values."""
    mlflow = f"[{summary['mlflow_run_id']}]({summary['mlflow_run_url']})" if summary.get("mlflow_run_url") \
        else f"`{summary['mlflow_run_id']}`"
    scores = ", ".join(f"{k} {v:.3f}" for k, v in summary["scores"].items())
    values = ", ".join(f"expert {k}: {v:+.3f}" for k, v in summary["values"].items())
    sources = sources_markdown(summary.get("sources", []))
    return (f"# Task\n\n{summary['task']}\n\n# Answer (expert {summary['expert_id']}, {summary['reward_label']}, "
            f"reward {summary['reward']:.2f})\n\n{summary['answer']}\n\n**Scores:** {scores}  \n"
            f"**Expert values:** {values}  \n**Iterations:** {summary['iterations']}, total reward "
            f"{summary['total_reward']:.2f}  \nMLflow run: {mlflow}  \nRun folder: `{summary['run_dir']}`\n"
            + (f"\n# Sources\n\n{sources}\n" if sources else ""))
