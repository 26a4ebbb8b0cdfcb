"""RL from judge reward, as plain functions (the `rl_finetune` flow wraps them): niche prompts in, a LoRA adapter
out, rewarded by the run's own judge panel for quality and for landing in the niche it was asked for.

The reward is quality - miss_weight x the mean distance of the judged measures from the asked niche's centre, and
-1 for a text the panel could not score or whose guards flag it as addressing its judge (a policy trained on the
judges' own scores is the likeliest thing to learn to game them).
"""

from pathlib import Path

import numpy as np

from evoforge.core.config import RLConfig, RunConfig, judge_models
from evoforge.core.domain import Domain
from evoforge.core.niches import bin_centre, niche_prompt, random_niche
from evoforge.core.tracking import Tracker
from evoforge.steps.evolution import make_panel

UNSCORED = -1.0


def niche_batch(domain: Domain, backend, k: int, rng: np.random.Generator) -> tuple[list[str], list[list[int]]]:
    """`k` random niches and their prompts in the model's chat format (as `search: niche` asks a tuned model)."""
    niches = [random_niche(domain, rng) for _ in range(k)]
    return [backend.chat_prompt(niche_prompt(domain, n)) for n in niches], niches


def niche_reward(scores, domain: Domain, targets: list[list[int]], miss_weight: float) -> np.ndarray:
    """The reward above, from the panel's scores of the texts (`quality`, `measure_<axis>`, `flagged`)."""
    quality = scores["quality"].to_numpy(dtype=float)
    measures = scores[[f"measure_{a}" for a in domain.axis_names]].to_numpy(dtype=float)
    centres = np.array([[bin_centre(axis, b) for axis, b in zip(domain.axes, t)] for t in targets])
    reward = quality - miss_weight * np.abs(measures - centres).mean(axis=1)
    bad = np.isnan(reward)
    if "flagged" in scores:
        bad |= scores["flagged"].fillna(False).to_numpy(dtype=bool)
    return np.where(bad, UNSCORED, reward)


def train_rl(domain: Domain, base_model: str, settings: RLConfig, judging: RunConfig, out_dir: Path,
             tracker: Tracker | None, register_as: str | None, device: str = "auto") -> dict:
    """Train, log each step's reward and KL, save the adapter, and register it (with a tracker)."""
    from models.loading import load_backend
    from models.mlflow_model import log_generator
    from models.policy_gradient import train_policy

    base = load_backend(base_model, "float32", device)  # AdamW on bfloat16 weights loses small updates
    backends = {m: load_backend(m, judging.precision, judging.device) for m in judge_models(judging.judges)}
    panel = make_panel(judging, domain, backends)

    def reward(texts, targets):
        return niche_reward(panel.judge(backends, texts), domain, targets, settings.miss_weight)

    def on_step(record):
        print(f"rl step {record['step'] + 1}/{settings.steps}: mean reward {record['reward']:.3f}, "
              f"kl {record['kl']:.4f}", flush=True)  # progress (the flow logs prints)
        if tracker is not None:
            tracker.log_metrics({f"rl/{k}": v for k, v in record.items() if k != "step"}, step=record["step"])

    checkpoint, history = train_policy(base, lambda rng: niche_batch(domain, base, settings.prompts_per_step, rng),
                                       reward, settings, out_dir, base_model, on_step)
    outcome = {"checkpoint": str(checkpoint), "history": history, "model_uri": None, "version": None}
    if tracker is not None:
        tracker.log_artifacts(checkpoint, "rl/checkpoint")
        outcome["model_uri"], outcome["version"] = log_generator(tracker.uri, tracker.run_id, checkpoint, register_as)
    return outcome
