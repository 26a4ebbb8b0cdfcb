"""`evoforge chat`: a conversation with the experts, one small tournament per turn.

Each turn the experts (all, or `answering` of them picked by value) answer the conversation so far, with passages
retrieved for the message when a knowledge base is given; the judges score the answers (relevance, coherence and,
with passages, groundedness); the configured selection keeps one, and the answering experts learn from agreeing
with it as in `ask`. A reward the person types (`/reward 0.8`) is the external reward of `ask`: it feeds the
value of the expert whose answer it rates. On exit the turns are saved as `turns.parquet` and `records.jsonl`
(query / sources / answer / reward) in `runs/chat-<time>/`, and the experts to the population file, so the next
ask or chat starts from what this one learnt.
"""

import math
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from evoforge.core.config import TournamentConfig
from evoforge.core.experts import update_value
from evoforge.core.store import write_parquet
from evoforge.knowledge.base import KnowledgeBase
from evoforge.knowledge.records import RECORDS_FILE, record, source_list, write_records
from evoforge.steps.tournament import (TournamentSpec, TournamentState, answer_step, fit_tournament_judges,
                                       judge_step, last_layer, learn_values, load_spec, prepare_tournament,
                                       retrieve)

HISTORY_TURNS = 3  # earlier turns the experts read: the 135M model's context is small and it drifts on long ones


class ChatSession:
    def __init__(self, config: TournamentConfig, backends: dict, kb: KnowledgeBase | None = None,
                 spec: TournamentSpec | None = None):
        # The session's folder and experts come as an ask's do; retrieval happens per message, not for "chat".
        start = prepare_tournament(config.model_copy(update={"kb": None, "run_name": config.run_name or _chat_name()}),
                                   spec or load_spec())
        self.config, self.spec, self.root, self.experts = config, start.spec, start.root, start.experts
        self.backends, self.kb = backends, kb
        self.turns: list[dict] = []

    def conversation(self, message: str) -> str:
        """The message with the last HISTORY_TURNS turns before it."""
        lines = [f"User: {t['message']}\nAssistant: {t['answer']}" for t in self.turns[-HISTORY_TURNS:]]
        return "\n".join([*lines, f"User: {message}"]) if lines else message

    def turn(self, message: str) -> dict:
        """Answer one message; returns the turn's record (answer, expert, scores, sources)."""
        config = self.config.model_copy(update={"instruction": self.conversation(message), "context": ""})
        retrieval = retrieve(self.kb, message, config.kb_k, config.kb_context_chars) if self.kb else None
        state = TournamentState(config, self.spec, self.experts, self.root, retrieval)
        panel = fit_tournament_judges(state, self.backends)
        number = len(self.turns)
        judged = last_layer(judge_step(state, panel, answer_step(state, number, self.backends), self.backends))
        kept = state.selector.pick(judged.reset_index(drop=True))
        values = learn_values(config, state.values, judged, kept, kept, 0.0, None)
        chosen = judged.iloc[kept]
        expert_id = int(chosen["expert_id"])
        self.experts = [replace(e, value=float(v), picks=e.picks + (e.expert_id == expert_id))
                        for e, v in zip(self.experts, values)]
        turn = {"turn": number, "message": message, "answer": str(chosen["text"]), "expert_id": expert_id,
                "score": float(chosen["score"]), "grounded": float(chosen.get("grounded", math.nan)),
                "answers": len(judged), "reward": math.nan, "sources": source_list(retrieval.passages) if retrieval else [],
                "context": retrieval.context if retrieval else ""}
        self.turns.append(turn)
        return turn

    def reward(self, value: float) -> float:
        """A person's reward for the last answer: added to its turn and learnt by its expert, as `ask` learns an
        external reward. Returns the expert's new value."""
        if not self.turns:
            raise ValueError("/reward rates the last answer: ask something first")
        if not -10 <= value <= 10:
            raise ValueError(f"/reward {value}: give a number between -10 and 10 (e.g. /reward 0.8)")
        last = self.turns[-1]
        last["reward"] = value if math.isnan(last["reward"]) else last["reward"] + value
        v = self.config.values
        values = update_value(self.values, last["expert_id"], value, v.learning_rate, v.discount)
        self.experts = [replace(e, value=float(x)) for e, x in zip(self.experts, values)]
        return float(values[last["expert_id"]])

    @property
    def values(self) -> np.ndarray:
        return np.array([e.value for e in self.experts])

    def save(self) -> dict:
        """The turns as Parquet and JSONL records, and the experts to the population file."""
        turns = pd.DataFrame(self.turns, columns=["turn", "message", "answer", "expert_id", "score", "grounded",
                                                  "answers", "reward", "context"])
        turns["sources"] = [[s["citation"] for s in t["sources"]] for t in self.turns] if self.turns else []
        parquet = write_parquet(turns, self.root / "turns.parquet")
        records = write_records([record(t["message"], t["sources"], t["answer"], t["reward"], "chat", self.root.name,
                                        t["context"]) for t in self.turns], self.root / RECORDS_FILE)
        experts = pd.DataFrame([e.to_row() for e in self.experts])
        population = write_parquet(experts, Path(self.config.population_file))
        return {"turns": str(parquet), "records": str(records), "population": str(population)}


def _chat_name() -> str:
    return "chat-" + datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
