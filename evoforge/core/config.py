"""Run configuration: one pydantic model, so the CLI, the Prefect UI's run form and MLflow params share it."""

import math
from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator

from evoforge.core.budget import BudgetConfig
from models.devices import DEVICE_PATTERN
from evoforge.core.experts import RewardScheme, SamplingRanges


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SamplingConfig(_Config):
    """Ranges that each expert's sampling settings are drawn from (uniformly, once, when the expert is made)."""

    temperature: tuple[float, float] = Field((0.7, 1.2), description="Sampling temperature range (low, high)")
    top_p: tuple[float, float] = Field((0.8, 1.0), description="Nucleus sampling top_p range (low, high)")
    frequency_penalty: tuple[float, float] = Field((0.0, 0.5), description="Frequency penalty range (low, high)")
    presence_penalty: tuple[float, float] = Field((0.0, 0.5), description="Presence penalty range (low, high)")

    @model_validator(mode="after")
    def _ordered(self):
        for name in ("temperature", "top_p", "frequency_penalty", "presence_penalty"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"sampling.{name}: expected (low, high) with low <= high, got ({lo}, {hi})")
        if not 0 < self.top_p[0] <= self.top_p[1] <= 1:
            raise ValueError(f"sampling.top_p: expected values in (0, 1], got {self.top_p}")
        if self.temperature[0] <= 0:
            raise ValueError(f"sampling.temperature: expected values > 0, got {self.temperature}")
        return self

    def ranges(self, max_new_tokens: int) -> SamplingRanges:
        """The ranges experts draw from; each draws its own max-new-tokens from 75%..100% of `max_new_tokens`."""
        low = max(1, math.ceil(0.75 * max_new_tokens))
        return SamplingRanges(self.temperature, self.top_p, self.frequency_penalty, self.presence_penalty,
                              (low, max_new_tokens))


class ValueLearning(_Config):
    """The expert value update `v += lr * (r + discount * max(v) - v)`, and exploration that decays."""

    learning_rate: float = Field(0.1, gt=0, le=1, description="Value update step size")
    discount: float = Field(0.95, ge=0, le=1, description="Discount on max(values) in the value update")
    epsilon_start: float = Field(0.5, ge=0, le=1, description="Exploration rate at the start")
    epsilon_decay: float = Field(0.8, gt=0, le=1, description="Exploration rate factor per generation (iteration)")
    epsilon_min: float = Field(0.05, ge=0, le=1, description="Exploration rate floor")


class GatingConfig(ValueLearning):
    """Epsilon-greedy expert selection with decaying exploration, and the expert value update."""

    experts_per_generation: int = Field(2, ge=1, le=256, description="Experts picked to write each generation")
    policy: Literal["epsilon", "router"] = Field(
        "epsilon", description="'epsilon': epsilon-greedy over one value per expert; 'router': per candidate a "
        "target niche (as search 'target' draws it) and the expert with the most credit (archive improvement) on "
        "that and nearby niches, epsilon-greedy with the same exploration rate (evoforge.search.router)",
    )
    router_bandwidth: float = Field(
        1.0, gt=0, le=100, description="router: how far an expert's credit spreads, in bins (a neighbouring cell "
        "counts exp(-1/2h^2) of its own)",
    )


class RewardConfig(_Config):
    new_cell: float = Field(1.0, description="Reward for a candidate that fills an empty cell")
    improved: float = Field(0.5, description="Reward for a candidate that beats a cell's elite")
    not_added: float = Field(0.0, description="Reward for a candidate that changes nothing")


class JudgeConfig(_Config):
    """One AI-feedback judge: a model, a prompt format and which of the domain's phrasings it asks."""

    name: str = Field(pattern=r"^[a-z][a-z0-9-]*$", description="Short name (no underscores), used in column and metric names")
    model: str = Field("smollm2", description="Judge model: an embedded name, a .gguf path, a local folder, or a "
                       "server model 'openai:<model>@<base_url>' (see README, Models and backends)")
    format: Literal["chat", "instruct"] = Field(
        "chat", description="'chat': the model's chat template; 'instruct': '### Instruction/Input/Response'"
    )
    phrasing: int = Field(0, ge=0, description="Index into each question's list of instructions (wraps around)")
    kind: Literal["logprob", "generative", "label", "embedding"] = Field(
        "logprob",
        description="'logprob': P(first label) from answer-token log-probabilities; 'generative': a 3-digit score "
        "the judge writes (parsed strictly, retried, NaN if never valid); 'label': the more likely label as 1 or 0; "
        "'embedding': measures only, which of the axis's two poles the text's sentence embedding is nearer "
        "(`model`: an embedder, e.g. minilm; it does not answer the quality question)",
    )
    calibration: Literal["auto", "none", "contextual", "platt", "isotonic", "anchors"] = Field(
        "auto",
        description="Map raw scores before combining: 'contextual' divides out a content-free input's score; "
        "'platt' / 'isotonic' are fitted on the domain's reference labels; 'anchors' sends the median labelled "
        "text of each side to 0.05 / 0.95 (for weak labels); 'auto': platt where the domain has reference labels "
        "for the question, anchors where the run wrote weak references (weak_references), else none",
    )


def judge_models(judges: list[JudgeConfig]) -> set[str]:
    """The generative models the judges ask (an embedding judge's embedder loads on its own, not as a backend)."""
    return {j.model for j in judges if j.kind != "embedding"}


def unique_judge_names(judges: list[JudgeConfig]) -> None:
    """Judge names become column and metric names: two judges may not share one."""
    names = [j.name for j in judges]
    if len(set(names)) != len(names):
        raise ValueError(f"judges: expected unique judge names, got {names}")


def default_judges() -> list[JudgeConfig]:
    return [
        JudgeConfig(name="chat0", format="chat", phrasing=0),
        JudgeConfig(name="chat1", format="chat", phrasing=1),
    ]


def default_run_judges() -> list[JudgeConfig]:
    """An evolution run's panel: the two generative judges, and an embedding judge for the measures (SmolLM2 is
    blind to some axes, e.g. genre; README, Judges)."""
    return default_judges() + [JudgeConfig(name="emb", kind="embedding", model="minilm")]


class FinetuneConfig(_Config):
    """Fine-tuning the generator on the archive's elites (LoRA by default), then evaluating it."""

    enabled: bool = Field(False, description="Finetune and evaluate after the last generation")
    every: int = Field(0, ge=0, description="Also finetune every K generations (0: only after the last)")
    join_population: bool = Field(False, description="A tuned model joins the experts as a new backend")
    method: Literal["lora", "full"] = Field(
        "lora", description="LoRA adapters (peft), or every weight (needs a Hugging Face folder, not a GGUF base)"
    )
    epochs: int = Field(3, ge=1, le=100, description="Epochs over the training split")
    train_batch_size: int = Field(
        4, ge=1, le=256, description="Examples per forward pass of training (was finetune.batch_size, still read)",
        validation_alias=AliasChoices("train_batch_size", "batch_size"),
    )
    grad_accum: int = Field(2, ge=1, le=256, description="Batches per optimizer step")
    learning_rate: float = Field(3e-4, gt=0, le=1, description="AdamW peak learning rate (cosine schedule)")
    warmup_ratio: float = Field(0.1, ge=0, le=0.5, description="Share of steps spent warming up")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm")
    max_length: int = Field(256, ge=16, le=4096, description="Tokens per example (longer ones are cut)")
    eval_fraction: float = Field(0.2, gt=0, lt=1, description="Share of examples held out for the loss")
    patience: int = Field(1, ge=1, description="Epochs without a better held-out loss before stopping")
    lora_r: int = Field(8, ge=1, le=256, description="LoRA rank")
    lora_alpha: int = Field(16, ge=1, description="LoRA scaling numerator")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout")
    min_examples: int = Field(2, ge=2, description="Skip finetuning with fewer examples (elites) than this")
    seed: int = Field(0, ge=0, description="Seed for the split, shuffling and initialisation")
    replay: Literal["uniform", "prioritized"] = Field(
        "uniform", description="'uniform': every elite once; 'prioritized': the training split is drawn with "
        "priority by replay_priority (P ~ (p + 0.01)^replay_alpha), importance-corrected by replay_beta (as "
        "resampling, see README)",
    )
    replay_priority: Literal["quality", "advantage"] = Field(
        "quality", description="prioritized replay's priority: the elite's quality, or its advantage (quality minus "
        "the mean quality of the run's judged candidates in its cell)",
    )
    replay_alpha: float = Field(0.6, ge=0, le=10, description="How strongly priority shapes the draws (0: uniform)")
    replay_beta: float = Field(0.4, ge=0, le=1, description="Importance correction (1: undoes the priority's bias)")


class EvaluateConfig(_Config):
    """Candidate vs champion: each fills a fresh archive with the same budget, seed and judges."""

    generations: int = Field(2, ge=1, le=1000, description="Generations per evaluated model")
    batch_size: int = Field(8, ge=1, le=4096, title="Evaluation Batch Size",  # the form's label: not the run's
                            description="Candidates per generation of each evaluated model")
    search: Literal["niche", "lmx", "fixed_few_shot", "zero_shot"] = Field(
        "niche", description="How evaluated models are prompted ('niche': asked for a random niche)"
    )
    margin: float = Field(
        0.02, ge=0, le=10, description="Promote only if QD score >= champion's x (1 + margin), mean quality not lower"
    )
    baselines: list[Literal["zero_shot", "fixed_few_shot"]] = Field(
        default_factory=list, description="Baselines (base model) run beside the two: random search, fixed few-shot"
    )


class MergeConfig(_Config):
    """How tuned LoRA adapters of one base model are merged into one (peft's weighted adapter merging)."""

    method: Literal["linear", "ties", "dare_ties", "dare_linear"] = Field(
        "linear", description="linear: the weighted sum of the adapters' weight deltas (exact); ties: trim, elect "
        "signs, mean of agreeing entries; dare_*: random drops with rescaling, then ties or linear"
    )
    weights: list[float] | None = Field(
        None, min_length=2, description="One weight per model, in their order (default: equal weights summing to 1)"
    )
    density: float = Field(0.5, gt=0, le=1, description="ties and dare: share of each adapter's delta entries kept")
    seed: int = Field(0, ge=0, description="Seed of DARE's random drops")


class RLConfig(_Config):
    """RL from judge reward (models/policy_gradient.py): a LoRA adapter trained by group-relative policy gradient
    to write, for a random niche of the domain's grid, a text the run's judges score high and place in that niche."""

    steps: int = Field(24, ge=1, le=10_000, description="Policy updates (one sampled batch each)")
    prompts_per_step: int = Field(4, ge=1, le=256, description="Niche prompts per update")
    group: int = Field(4, ge=2, le=64, description="Completions sampled per prompt (the group is the baseline)")
    max_new_tokens: int = Field(48, ge=4, le=512, description="New tokens a completion may take at most")
    temperature: float = Field(1.0, gt=0, le=2, description="Sampling temperature while training")
    learning_rate: float = Field(2e-4, gt=0, le=1, description="AdamW learning rate (constant)")
    kl: float = Field(0.05, ge=0, le=10, description="Weight of the KL to the base model (0: none)")
    miss_weight: float = Field(1.0, ge=0, le=10, description="Reward = quality - miss_weight x the measures' mean "
                               "distance from the asked niche's centre (0: quality only)")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm")
    lora_r: int = Field(8, ge=1, le=256, description="LoRA rank")
    lora_alpha: int = Field(16, ge=1, description="LoRA scaling numerator")
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="LoRA dropout (0: the sampling and the update see one "
                                "policy)")
    seed: int = Field(0, ge=0, description="Seed of the niches drawn, the sampling and initialisation")

    @property
    def method(self) -> str:
        return "lora"  # the reference model is the base with the adapter off


Strategy = Literal["sample", "beam", "tot", "mcts"]  # how a candidate is written (RunConfig.strategy)


class TreeConfig(_Config):
    """Settings of the search strategies over sentences (evoforge.search.strategies) when `strategy` is not
    'sample'. A candidate's text is still at most its expert's max-new-tokens long."""

    width: int = Field(2, ge=1, le=32, description="beam: beams kept; tot: nodes kept per step")
    k: int = Field(3, ge=1, le=32, description="Continuations drawn per expanded node (beam: per beam)")
    iterations: int = Field(4, ge=1, le=1000, description="mcts: iterations (select, expand, rollout, back up)")
    exploration: float = Field(1.414, ge=0, le=100, description="mcts: UCT exploration constant (seed 002: 1.414)")
    sentence_tokens: int = Field(24, ge=4, le=512, description="New tokens a sentence may take at most")
    max_steps: int = Field(4, ge=1, le=64, description="beam and tot: sentences at most")
    normalise: bool = Field(True, description="beam: score by log-probability per token (else summed)")


class ManagerConfig(_Config):
    """The manager of a manager/worker search (HRL): per target niche, a bandit picks which (strategy, expert)
    writes the candidate, credited with the archive improvement the candidate made (evoforge.search.manager)."""

    enabled: bool = Field(False, description="Let the manager pick (strategy, expert) per target niche; the "
                          "gating policy and `search` then do not choose")
    strategies: list[Strategy] = Field(
        default_factory=lambda: ["sample", "tot"], min_length=1, description="Strategies the manager chooses among"
    )
    policy: Literal["ucb1", "thompson"] = Field(
        "ucb1", description="'ucb1': mean reward + c sqrt(2 ln n / n_arm), untried arms first; 'thompson': a draw "
        "from each arm's Beta posterior (rewards clipped to [0, 1])",
    )
    exploration: float = Field(1.0, ge=0, le=100, description="ucb1: the exploration factor c")
    warm_start: str | None = Field(
        None, description="A run folder whose manager credit the bandit starts from (a trained agent, `evoforge "
        "test-agent`); arms are matched by name ('<strategy>/<expert id>'), so the same seed and models give the "
        "same experts; empty: no prior credit",
    )


class ArrangementsConfig(_Config):
    """Evolving whole experts (evoforge.search.arrangements): every `cull_every` generations the `cull` experts with
    the lowest mean value over the last `window` generations are replaced by children of the best two (a mutated
    copy, or a crossover of both, then mutated)."""

    evolve: bool = Field(False, description="Evolve the experts' arrangements (sampling settings, system prompt, "
                         "backend, few-shot items) by culling and breeding; off: the population stays as made")
    cull_every: int = Field(2, ge=1, le=100_000, description="Cull after every this many generations")
    cull: int = Field(1, ge=1, le=255, description="Experts culled (and replaced by children) at each cull")
    window: int = Field(2, ge=1, le=100_000, description="Generations whose expert values are averaged to rank "
                        "the experts (an expert younger than the window: the generations it lived)")
    mutation_scale: float = Field(
        0.3, gt=0, le=1, description="A child's mutation: each sampling setting moves by a Gaussian step of this "
        "share of its range (clipped to it), and its system prompt, backend and one few-shot item are each "
        "swapped with this probability",
    )
    crossover_rate: float = Field(
        0.5, ge=0, le=1, description="Chance a child is a uniform crossover of the best two (each part from one "
        "of them) before its mutation, else a mutated copy of one of them",
    )


class RunConfig(_Config):
    """An evolution run. Every field shows in the Prefect UI's run form and is logged as an MLflow param."""

    domain: str = Field("opinions", description="A shipped domain (opinions, stories) or a path to a domain YAML")
    generations: int = Field(8, ge=1, le=100_000, description="Number of generations")
    experts: int = Field(4, ge=1, le=256, description="Size of the expert population")
    batch_size: int = Field(16, ge=1, le=4096, description="Candidates written per generation (all experts)")
    max_new_tokens: int = Field(
        64, ge=4, le=2048, description="Largest max-new-tokens an expert may draw (they draw from 75%..100% of it)"
    )
    continue_tokens: int = Field(
        24, ge=0, le=512, description="Budget of the one continuation for a candidate that stops mid-sentence"
    )
    seed: int = Field(0, ge=0, description="Random seed: the same seed and config give the same run")
    out: str = Field("runs", description="Folder that holds runs/<run name>/ with the Parquet files")
    run_name: str | None = Field(
        None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Name of the run; an existing run resumes"
    )
    generator_models: list[str] = Field(
        default_factory=lambda: ["smollm2"], min_length=1,
        description="Models the experts are spread over: local names or server models (openai:<model>@<base_url>)"
    )
    judges: list[JudgeConfig] = Field(default_factory=default_run_judges, min_length=1,
                                      description="AI-feedback judges")
    combine: Literal["auto", "mean", "weighted", "vote", "bma", "stacking"] = Field(
        "auto",
        description="How judges combine: mean; weighted (by accuracy on reference labels, else panel agreement); "
        "majority vote; Bayesian model averaging or stacking (both fitted on the domain's reference labels); "
        "auto: bma for each question with labelled texts (references or weak references), else mean",
    )
    judge_references: bool = Field(
        True, description="Score the domain's reference labels first: per-judge accuracy and AUC are logged, and "
        "calibration (platt, isotonic) and combine (weighted, bma, stacking) are fitted on them",
    )
    weak_references: int = Field(
        0, ge=0, le=64, description="For a domain without reference labels: texts the generator writes at each pole "
        "of each axis ('... very positive', '... very negative'), labelled by the pole, on which the axis judges are "
        "calibrated (calibration: auto -> anchors) so their scores spread over the grid; 0: the judges stay raw"
    )
    heldout_judge: bool = Field(
        True, description="Check the elites every generation with a held-out judge (another phrasing and prompt "
        "format, never used for selection): metrics heldout/same_cell and heldout/agreement"
    )
    judge_guards: bool = Field(
        True, description="Judge-gaming guards: prompt markup is removed from texts before judging, and a candidate "
        "that addresses its judge (an instruction to the evaluator, a fake template) is scored but kept out of the "
        "archive"
    )
    precision: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="Generators' and judges' number format; 'auto': bfloat16 where the hardware has BF16 units"
    )
    device: str = Field(
        "auto", pattern=DEVICE_PATTERN, description="Where models compute: auto (a CUDA GPU when there is one), cpu, "
        "cuda or cuda:N"
    )
    shots: int = Field(3, ge=1, le=16, description="Few-shot items per genotype")
    near_probability: float = Field(
        0.5, ge=0, le=1, description="Chance a mutation is 'near' (else 'replace') once the archive has elites"
    )
    search: Literal["auto", "lmx", "splice", "target", "target_zero_shot", "fixed_few_shot", "zero_shot", "niche",
                    "refine", "pct"] = Field(
        "auto",
        description="'auto' (the default): 'splice' on grids of two or more axes and 'lmx' on one axis, where each "
        "was measured best against random search (README, make science); 'lmx': mutated few-shot prompts (QDAIF); 'target': niche-targeted LMX (each candidate aimed at "
        "a frontier or extreme cell, with the nearest elites as examples and the niche named in the prompt); "
        "'target_zero_shot': the same targets named in a prompt without examples; 'splice': targets as in "
        "'target'; half the candidates start with the opening sentences of the elite nearest their target (the "
        "parent) for the model to continue, half are new texts aimed at it; "
        "'fixed_few_shot' / 'zero_shot': the QDAIF baselines; 'niche': a chat prompt asking for a random niche "
        "(for tuned models); 'refine': targets as in 'target', and a chat prompt showing the 2-3 elites nearest "
        "the target and asking for one new text of its niche that combines what is best in them (Mixture-of-Agents); "
        "'pct': perceptual control: targets as in 'target', and each attempt at a cell aims past it by the error "
        "the earlier attempts at it left (examples nearest the aim, its niche named, a learned gain per axis)",
    )
    pct_quality: float = Field(
        0.5, ge=0, le=1, description="search 'pct': the reference quality level; the examples are drawn from the "
        "run's judged texts at or above it (from all of them while fewer than `shots` are)",
    )
    pct_temperature_gain: float = Field(
        0.0, ge=0, le=2, description="search 'pct': where the grid's edge cuts the aim (the examples can lean no "
        "further), the expert's temperature is raised by up to this share (0.5: x 1.5 for a cut of a bin or more); "
        "0 (the default: the rise made texts longer and drift, README): the temperature stays the expert's",
    )
    screen: int = Field(
        0, ge=0, le=16, description="Screening by a learned value model: write screen x batch_size candidates and "
        "judge only batch_size of them, those it ranks most likely to enter the archive plus a random share "
        "(screen_explore); it is refitted every generation on everything judged so far. 0: off, every candidate "
        "is judged"
    )
    screen_explore: float = Field(
        0.25, ge=0, le=1, description="Share of the judged candidates drawn at random instead of by the value model "
        "(keeps its training data broad and measures its live error)"
    )
    strategy: Strategy = Field(
        "sample", description="How an expert writes a candidate: 'sample' (one sampled text: today); 'beam' (beam "
        "search over sampled sentences by log-probability); 'tot' (Tree-of-Thought: k next sentences per kept node, "
        "valued by the value model, the best `tree.width` kept); 'mcts' (UCT over sentences, rollouts valued by the "
        "value model). tot and mcts write plain samples until a value model exists (value_model, or 8 judged "
        "candidates of the run)",
    )
    tree: TreeConfig = Field(default_factory=TreeConfig)
    value_model: str | None = Field(
        None, description="A value model trained on earlier runs (`evoforge train-world`: a .joblib file, or "
        "'models:/<name>/<version>' from the MLflow registry) that tot, mcts and the manager value texts with; "
        "empty: the run's own, refitted every generation",
    )
    manager: ManagerConfig = Field(default_factory=ManagerConfig)
    arrangements: ArrangementsConfig = Field(default_factory=ArrangementsConfig)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    gating: GatingConfig = Field(default_factory=GatingConfig)
    rewards: RewardConfig = Field(default_factory=RewardConfig)
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    task_retries: int = Field(
        3, ge=0, le=10, description="Retries (with backoff) of a generation's model-calling tasks after an error"
    )
    task_timeout_s: float = Field(
        3600, gt=0, description="Seconds a generation's model-calling task may take before it is stopped and retried"
    )
    seed_kb: str | None = Field(
        None, description="Knowledge base whose passages nearest each niche join the seed pool that LMX draws "
        "few-shot examples from (a name under .state/kb/, or a folder path); empty: the domain's pool only",
    )
    seed_kb_per_niche: int = Field(1, ge=1, le=20, description="Passages taken from seed_kb per niche")
    knowledge_base: str | None = Field(
        None, description="After the run, add its elites to this knowledge base (a name under .state/kb/, or a "
        "folder path); empty: none",
    )
    experiment: str = Field("evoforge", min_length=1, description="MLflow experiment name")
    islands: int = Field(
        1, ge=1, le=1024, description="Island populations evolving side by side, each with its own experts, archive "
        "and pool (experts and batch_size are per island); the run's archive is their union. 1: one population, "
        "run in the flow's process; more: each island's generation is a task on a Dask cluster",
    )
    migration_interval: int = Field(
        4, ge=1, le=100_000, description="Every this many generations, each island's best elites migrate to another "
        "island (islands > 1)",
    )
    migration_topology: Literal["ring", "random"] = Field(
        "ring", description="Where an island's migrants go: 'ring' (island k -> k+1, the last to the first) or "
        "'random' (another island drawn at each migration, seeded by the run's seed)",
    )
    migrants: int = Field(2, ge=1, le=4096, description="Elites (each island's best) that migrate at each migration")
    workers: int = Field(
        2, ge=1, le=1024, description="Worker processes of the local Dask cluster an island run starts and stops "
        "(ignored when cluster is set)",
    )
    cluster: str | None = Field(
        None, pattern=r"^([a-z]+://)?[A-Za-z0-9_.\-\[\]:]+:[0-9]+$", description="Address of a running Dask "
        "scheduler (e.g. tcp://10.0.0.5:8786) that an island run's (or judge_shards') tasks go to; empty: a local "
        "cluster of workers",
    )
    judge_shards: int = Field(
        1, ge=1, le=1024, description="Contiguous shards a one-population run's generation is cut into for judging, "
        "each judged by a task on the Dask cluster (workers or cluster) with the workers' own judge models. 1: "
        "judged in the flow's process",
    )

    @model_validator(mode="after")
    def _unique_judges(self):
        unique_judge_names(self.judges)
        return self

    @model_validator(mode="after")
    def _islands(self):
        if self.islands == 1 and self.judge_shards == 1 and self.cluster is not None:
            raise ValueError("cluster: a Dask cluster runs island populations or judge shards; set islands or "
                             "judge_shards to 2 or more, or leave cluster empty")
        if self.judge_shards > 1:
            self._check_judge_shards()
        if self.islands > 1 and self.finetune.join_population:
            raise ValueError("finetune.join_population: a tuned model cannot join the experts of an island run yet; "
                             "set islands to 1, or turn join_population off")
        if self.islands > 1 and (self.strategy != "sample" or self.manager.enabled):
            raise ValueError("strategy: search strategies and the manager run in single-population runs only; set "
                             "islands to 1, or strategy to 'sample' and manager.enabled to false")
        if self.screen and (self.strategy != "sample" or self.manager.enabled):
            raise ValueError("strategy: screening and a search strategy (or the manager) do not combine yet; set "
                             "screen to 0, or strategy to 'sample' and manager.enabled to false")
        if self.islands > 1 and self.search == "pct":
            raise ValueError("search: 'pct' rebuilds its loop from the run's own record and runs in single-population "
                             "runs only; set islands to 1, or another search")
        if self.gating.policy == "router" and (self.islands > 1 or self.screen or self.manager.enabled):
            raise ValueError("gating.policy: the router runs in single-population runs without screening or the "
                             "manager (both would pick the experts too); set gating.policy to 'epsilon', or islands "
                             "to 1, screen to 0 and manager.enabled to false")
        if self.islands > 1 and self.screen:
            raise ValueError("screen: value-model screening runs in single-population runs only; set islands to 1, "
                             "or screen to 0")
        return self

    @model_validator(mode="after")
    def _arrangements(self):
        a = self.arrangements
        if not a.evolve:
            return self
        if a.cull >= self.experts:
            raise ValueError(f"arrangements.cull: culling {a.cull} of {self.experts} experts leaves no parent to "
                             "breed from; set cull to at most experts - 1 (or raise experts)")
        if a.crossover_rate > 0 and self.experts - a.cull < 2:
            raise ValueError(f"arrangements.crossover_rate: a crossover needs two surviving parents, and culling "
                             f"{a.cull} of {self.experts} experts leaves one; set crossover_rate to 0, or cull to at "
                             "most experts - 2")
        if a.cull_every >= self.generations:
            raise ValueError(f"arrangements.cull_every: a cull every {a.cull_every} generations in a run of "
                             f"{self.generations} leaves no generation to the evolved experts; set cull_every below "
                             "generations, or evolve to false")
        if self.islands > 1:
            raise ValueError("arrangements.evolve: arrangements evolve in single-population runs only; set islands "
                             "to 1, or evolve to false")
        if self.manager.enabled:
            raise ValueError("arrangements.evolve: the manager picks its (strategy, expert) arms by its own credit, "
                             "not by the expert values culling ranks them by; set manager.enabled or evolve to false")
        if self.gating.policy == "router":
            # The router keeps credit per expert position; culling replaces experts under new ids.
            raise ValueError("arrangements.evolve: the router's per-niche credit belongs to experts that culling "
                             "replaces; set gating.policy to 'epsilon', or evolve to false")
        return self

    def _check_judge_shards(self) -> None:
        if self.islands > 1:
            # Each island's generation is already one task on a worker, judged there; splitting it again would
            # submit tasks from inside a task.
            raise ValueError("judge_shards: an island run judges each island's candidates inside that island's task "
                             "(the islands already run in parallel); set judge_shards to 1, or islands to 1")
        if self.cluster is None and self.workers == 1:
            # One local worker judges the shards one after another: the same work as the flow's process, plus a
            # task round trip per shard.
            raise ValueError(f"judge_shards: {self.judge_shards} shards on a local cluster of 1 worker are judged one "
                             "after another, slower than judge_shards 1; set workers to 2 or more, give cluster, or "
                             "set judge_shards to 1")
        if self.judge_shards > self.batch_size:
            raise ValueError(f"judge_shards: {self.judge_shards} shards of a generation of batch_size "
                             f"{self.batch_size} candidates would leave shards empty; set judge_shards to at most "
                             "batch_size")

    def sampling_ranges(self) -> SamplingRanges:
        return self.sampling.ranges(self.max_new_tokens)

    def reward_scheme(self) -> RewardScheme:
        return RewardScheme(**self.rewards.model_dump())


def flat_params(config: BaseModel, prefix: str = "") -> dict[str, str]:
    """Config as flat `a.b` -> string params for MLflow (judges by index)."""
    out = {}
    for key, value in config.model_dump(mode="json").items():
        out.update(_flatten(f"{prefix}{key}", value))
    return out


def _flatten(key: str, value) -> dict[str, str]:
    if isinstance(value, dict):
        return {k: v for sub, val in value.items() for k, v in _flatten(f"{key}.{sub}", val).items()}
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return {k: v for i, val in enumerate(value) for k, v in _flatten(f"{key}.{i}", val).items()}
    return {key: str(value)}


class TournamentConfig(_Config):
    """A mixture-of-experts tournament: experts answer one task, judges pick the best answer, a reward judge
    rates it, and the expert values learn who earns reward. Every field shows in the Prefect UI's run form."""

    instruction: str = Field(min_length=1, description="The task to answer")
    context: str = Field("", description="Context for the task (background, data, audience)")
    experts: int = Field(4, ge=1, le=64, description="Experts in a new population (a saved one keeps its size)")
    answering: int | None = Field(
        None, ge=1, le=64, description="Experts that answer each iteration, picked by value with exploration; "
        "empty: all of them",
    )
    generator_models: list[str] = Field(
        default_factory=lambda: ["smollm2"], min_length=1,
        description="Models the experts are spread over: local names or server models (openai:<model>@<base_url>)"
    )
    population: str | None = Field(
        None, description="Parquet file of experts to start from (e.g. an evolution run's experts.parquet); "
        "empty: the saved population (population_file), else random experts",
    )
    population_file: str = Field(
        ".state/tournament/experts.parquet",
        description="Where the experts and their values are saved after each ask (the next ask starts from them)",
    )
    max_new_tokens: int = Field(96, ge=8, le=2048, description="Largest answer length an expert may draw")
    continue_tokens: int = Field(32, ge=0, le=512, description="Budget of the one continuation of a cut-off answer")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    judges: list[JudgeConfig] = Field(default_factory=default_judges, min_length=1,
                                      description="Judges of relevance and coherence")
    layers: int = Field(
        1, ge=1, le=8, description="Layers of answering (Mixture-of-Agents): layer 1 answers the task; in each later "
        "layer the same experts read the previous layer's answers and write improved ones; the last layer's answers "
        "are judged and selected (1: one layer, no reading of peers)",
    )
    layer_context_chars: int = Field(
        600, ge=50, le=20_000, description="Characters of the previous layer's answers a later layer reads, shared "
        "equally among the distinct answers (a small model follows a short prompt better)",
    )
    combine: Literal["mean", "weighted", "vote"] = Field(
        "mean", description="How judges combine (a free-form task has no reference labels for bma or stacking)"
    )
    routing: Literal["none", "router"] = Field(
        "none", description="Who answers when `answering` < experts: 'none' (by value, epsilon-greedy); 'router' (by "
        "credit on earlier tasks similar to this one, by MiniLM embedding; credit: agreeing with the kept answer, "
        "kept in router_credit.parquet beside population_file; evoforge.steps.ask_routing)",
    )
    routing_bandwidth: float = Field(0.5, gt=0, le=10, description="routing 'router': how far credit spreads "
                                     "between tasks (distance between unit-length MiniLM embeddings)")
    selection: Literal["judges", "consensus", "verifier", "stacked", "vote", "weighted", "ranker"] = Field(
        "consensus", description="How the kept answer is picked: 'judges' (highest relevance/coherence score), "
        "'consensus' (the best-scored answer of the largest cluster of answers that say the same thing), "
        "'verifier' (highest P(correct) from a log-prob judge), 'stacked' (a model over these, fitted on the "
        "labelled split data/ask/labelled.jsonl); generator ensembles: 'vote' (the most common normalised short "
        "answer wins), 'weighted' (consensus clusters weighted by each answer's expert value x judge score); "
        "'ranker' (seed 002's ranking model: a pairwise ranker over cosine, length, word overlap, judge score and "
        "agreement, fitted on the labelled split)",
    )
    consensus_similarity: Literal["words", "embedding"] = Field(
        "words", description="How consensus compares answers: 'words' (overlap of the words they add to the task) "
        "or 'embedding' (MiniLM cosine)",
    )
    consensus_threshold: float = Field(
        0.2, gt=0, le=1, description="Similarity at which two answers count as saying the same thing (0.2: the "
        "best of 0.2-0.67 on the ask benchmark's labelled split, word overlap)",
    )
    strategy: Strategy = Field(
        "sample", description="How each expert writes its answer: 'sample' (one sampled answer); 'beam' (beam "
        "search over sampled sentences by log-probability); 'tot' (Tree-of-Thought) or 'mcts' (UCT over sentences), "
        "valued by the judges' panel (mean relevance/coherence). All experts' searches are batched together (one "
        "model call per search step); an answer's tokens count everything its search generated",
    )
    tree: TreeConfig = Field(default_factory=TreeConfig)
    ensemble: Literal["answers", "tokens"] = Field(
        "answers", description="'answers': each expert writes its own answer and the selection keeps one; 'tokens': "
        "the answering experts write one answer together, each token drawn from their averaged next-token "
        "distributions (in-process transformers models only: a server returns sampled text, not distributions)",
    )
    value_signal: Literal["agreement", "reward"] = Field(
        "agreement", description="What expert values learn from: 'agreement' (every answering expert is rewarded "
        "1 when its answer agrees with the kept one, so values rank experts by how often they are right) or "
        "'reward' (only the selected expert, by the reward judge's label)",
    )
    reward_model: str = Field("smollm2", description="Model of the reward judge that labels the selected answer")
    reward_calibration: Literal["contextual", "none"] = Field(
        "contextual", description="Divide the reward judge's label probabilities by those it gives content-free "
        "answers ('N/A'): a small judge otherwise rates almost anything 'highly effective'",
    )
    min_iterations: int = Field(2, ge=1, le=1000, description="Iterations before the reward threshold may stop it")
    max_iterations: int = Field(4, ge=1, le=1000, description="Iterations at most")
    reward_threshold: float = Field(
        2.0, ge=0, description="Stop (after min_iterations) once the total reward over iterations reaches this"
    )
    values: ValueLearning = Field(default_factory=lambda: ValueLearning(epsilon_start=0.2))
    external_reward: float | None = Field(
        None, ge=-10, le=10, description="A reward added in every iteration (e.g. a person's rating)"
    )
    external_reward_file: str | None = Field(
        None, description="Text file with one external reward per line, line i for iteration i"
    )
    wait_for_reward_s: int = Field(
        0, ge=0, le=86_400, description="Pause each iteration for a person to type a reward in the Prefect UI, "
        "this many seconds at most (0: no pause); on timeout it goes on without one",
    )
    seed: int = Field(0, ge=0, description="Random seed")
    precision: Literal["auto", "float32", "bfloat16"] = Field("auto", description="Models' number format")
    device: str = Field("auto", pattern=DEVICE_PATTERN, description="Where models compute: auto, cpu, cuda, cuda:N")
    out: str = Field("runs", description="Folder that holds runs/<run name>/ with the Parquet files")
    run_name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Name of the run")
    kb: str | None = Field(
        None, description="Knowledge base to answer from (a name under .state/kb/, or a folder path): passages "
        "retrieved for the task go into the experts' prompts, a groundedness question joins the judges' panel, and "
        "best_answer.md cites the sources; empty: none",
    )
    kb_k: int = Field(4, ge=1, le=50, description="Passages retrieved from the knowledge base")
    kb_context_chars: int = Field(
        800, ge=100, le=20_000, description="Characters of condensed passages put into the experts' prompts (a "
        "small model follows a short prompt better, and every prompt token costs time on a CPU)",
    )
    experiment: str = Field("evoforge-ask", min_length=1, description="MLflow experiment name")

    @model_validator(mode="after")
    def _consistent(self):
        if self.min_iterations > self.max_iterations:
            raise ValueError(f"min_iterations ({self.min_iterations}) must not exceed max_iterations "
                             f"({self.max_iterations})")
        unique_judge_names(self.judges)
        if self.ensemble == "tokens" and self.strategy != "sample":
            raise ValueError(f"ensemble: 'tokens' decodes one answer token by token and does not combine with "
                             f"strategy {self.strategy!r}; set strategy to 'sample' or ensemble to 'answers'")
        return self

    def sampling_ranges(self) -> SamplingRanges:
        return self.sampling.ranges(self.max_new_tokens)


# A chunk is a window of words: MiniLM reads 256 word pieces (about 180 words), and a fact cut at a window's edge
# lies whole in the next window when the windows overlap.
CHUNK_WORDS = 120
OVERLAP_WORDS = 30


class IngestConfig(_Config):
    """Adding sources to a knowledge base. Every field shows in the Prefect UI's run form."""

    path: str = Field(
        min_length=1, description="What to add: a document (.txt, .md, .html, .pdf), a folder of them, a run folder "
        "(its archive.parquet: the elites), an ask run folder (answers.parquet: the rated answers), or a folder of runs",
    )
    kb: str = Field("default", min_length=1, description="Knowledge base: a name (.state/kb/<name>) or a folder path")
    chunk_words: int = Field(CHUNK_WORDS, ge=16, le=400, description="Words per chunk")
    overlap_words: int = Field(OVERLAP_WORDS, ge=0, le=200, description="Words each chunk shares with the next")

    @model_validator(mode="after")
    def _overlap_below_chunk(self):
        if self.overlap_words >= self.chunk_words:
            raise ValueError(f"overlap_words ({self.overlap_words}) must be below chunk_words ({self.chunk_words})")
        return self


class WorldConfig(_Config):
    """Training the value model across runs (`evoforge train-world`). Every field shows in the Prefect UI's form."""

    runs: list[str] = Field(min_length=1, description="Run folders (runs/<name>) whose judged candidates it learns from")
    out: str = Field(".state/world/value_model.joblib", description="Where the fitted model is written (a run's "
                     "value_model setting can name this file)")
    register_as: str | None = Field("evoforge-value-model", description="Registered model name in MLflow (a run's "
                                    "value_model can name 'models:/<name>/<version>'); empty: not registered")
    seed: int = Field(0, ge=0, description="Seed of the held-out split")
    experiment: str = Field("evoforge-world", min_length=1, description="MLflow experiment name")


class AgentTestConfig(_Config):
    """A trained agent (the manager of a `train-agent` run) against plain sampling (`evoforge test-agent`): two
    fresh runs with the agent's settings and seed, one with the manager starting from the agent's credit, one
    sampling as today; both judge the same number of candidates per generation."""

    agent: str = Field(min_length=1, description="Run folder of the trained agent (a `train-agent` run)")
    generations: int = Field(4, ge=1, le=100_000, description="Generations of each of the two runs")
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1, description="Seeds; each runs both arms")
    out: str = Field("runs/test-agent", description="Folder for the two runs per seed and the table")
