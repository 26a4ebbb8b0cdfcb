"""Expert generation: the picked experts mutate their genotypes and write candidates, batched per backend."""

from collections import defaultdict
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from evoforge.core.domain import Domain
from evoforge.core.experts import Expert
from evoforge.core.niches import niche_prompt, niche_wish, random_niche
from evoforge.core.mutation import mutate
from evoforge.core.prompts import (cut_at_separator, ends_sentence, few_shot_prompt, trim_to_last_sentence,
                                   without_list_marker)
from evoforge.search.control import COLUMNS as CONTROL_COLUMNS, Controller
from evoforge.search.targeting import (SPLICE_EXPLORATION, labelled_prompt, pick_target, refine_plan, splice_plan,
                                       target_genotype)

MIN_TEXT_CHARS = 12  # shorter outputs ("I'm.", "") are recorded but not judged


@dataclass(frozen=True)
class Plan:
    """One candidate to write: which expert, with which mutated genotype and prompt."""

    expert: Expert
    mutation: str
    genotype: list[str]
    prompt: str
    chat: bool = False  # the prompt is a user message for the backend's chat template (niche search)
    opening: str = ""  # splice: the parent's opening words, ending the prompt and starting the candidate's text
    control: dict | None = None  # pct: the attempt's aim, error and gain (evoforge.search.control.COLUMNS)


def resolve_search(search: str, domain: Domain) -> str:
    """What `search: auto` means on a domain: 'splice' on a grid of two or more axes, where it found 1.70x the QD of
    random search at equal budget (`make science`, `stories`), and 'lmx' on one axis, where the two tie (1.16x on
    `opinions`) and 'lmx' costs less time per candidate."""
    if search != "auto":
        return search
    return "splice" if len(domain.axes) >= 2 else "lmx"


def plan_candidates(
    experts: list[Expert],
    picked: list[int],
    batch_size: int,
    domain: Domain,
    pool: list[str],
    elites: pd.DataFrame,
    near_probability: float,
    rng: np.random.Generator,
    search: str = "auto",
    controller=None,
    cell: tuple[int, ...] | None = None,
) -> list[Plan]:
    """`batch_size` candidates split as evenly as possible over the picked experts.

    search: 'lmx' mutates the expert's genotype once per candidate; 'fixed_few_shot' keeps it; 'zero_shot' uses
    no examples; 'niche' asks, in the chat format, for a random niche of the grid (what a tuned model learnt);
    'target' aims each candidate at one cell, with the elites nearest to it as named examples (see
    `evoforge.search.targeting`); 'target_zero_shot' aims at a cell the same way but with no examples, only the niche
    named on the open line; 'splice' aims at a cell the same way and starts the candidate with the opening
    sentences of the elite nearest to it, which the model continues; half its candidates (all while the archive
    is empty) are new texts aimed at their target as 'target_zero_shot' writes them (`SPLICE_EXPLORATION`);
    'refine' aims at a cell the same way and asks, in the chat format, for one new text combining the elites
    nearest to it (`refine_plan`; their texts are the plan's genotype, its parents); 'pct' aims at a cell the same
    way and lets `controller` (evoforge.search.control, built from the run's record) choose the examples, the
    niche named and the temperature from the errors of earlier attempts at that cell. 'auto': see `resolve_search`.
    `cell`: 'target' and 'pct' aim every candidate at this cell instead of drawing targets (benchmarks/pct_bench.py).
    """
    search = resolve_search(search, domain)
    plans = []
    g = domain.generator
    for index, share in zip(picked, np.array_split(np.arange(batch_size), len(picked))):
        expert = experts[index]
        for _ in share:
            if search == "niche":
                plans.append(Plan(expert, "niche", [], niche_prompt(domain, random_niche(domain, rng)), chat=True))
                continue
            if search in ("target", "target_zero_shot"):
                shots = len(expert.genotype) if search == "target" else 0
                target, examples = target_genotype(domain, pool, elites, shots, rng, cell)
                wish = niche_wish(domain, list(target))
                prompt = labelled_prompt(expert.system_prompt, g.template, examples, wish, g.separator)
                plans.append(Plan(expert, search, [text for text, _ in examples], prompt))
                continue
            if search == "pct":
                target = cell or pick_target(elites, domain.axis_names, domain.grid_shape, rng)
                controller = controller or Controller.from_record(domain, None)
                attempt = controller.attempt(target, expert.system_prompt, expert.sampling.temperature,
                                             len(expert.genotype), pool, rng)
                steered = replace(expert, sampling=replace(expert.sampling, temperature=attempt.temperature))
                plans.append(Plan(steered, "pct", attempt.genotype, attempt.prompt, control=attempt.columns))
                continue
            if search == "refine":
                _, parents, prompt = refine_plan(domain, elites, rng)
                plans.append(Plan(expert, "refine", parents, prompt, chat=True))
                continue
            if search == "splice":
                target, start = splice_plan(domain, elites, rng)
                prompt = labelled_prompt(expert.system_prompt, g.template, [], niche_wish(domain, list(target)),
                                         g.separator)
                if not start or rng.random() < SPLICE_EXPLORATION:  # a new text aimed at the target
                    plans.append(Plan(expert, "target_zero_shot", [], prompt))
                else:
                    plans.append(Plan(expert, "splice", [], prompt + start, opening=start))
                continue
            if search == "lmx":
                mutation, genotype = mutate(expert.genotype, pool, elites, domain.axis_names, near_probability, rng)
            else:
                mutation, genotype = "none", ([] if search == "zero_shot" else list(expert.genotype))
            prompt = few_shot_prompt(expert.system_prompt, g.template, genotype, g.separator)
            plans.append(Plan(expert, mutation, genotype, prompt))
    return plans


def complete(backend, prompts: list[str], settings: list, continue_tokens: int, seed: int,
             separator: str | None = None) -> list[tuple[str, int, bool]]:
    """One batched `generate` call with per-row settings, then one batched continuation for the rows that stopped
    mid-sentence (they ran out of tokens, not out of ideas). Text after `separator` is cut. Returns, per prompt,
    (text, new tokens, continued)."""
    stop = [separator.strip() or separator] if separator else None
    cut = (lambda t: cut_at_separator(t, separator)) if separator else (lambda t: t)
    outs = backend.generate(prompts, settings, stop=stop, seed=seed)
    texts, tokens = [cut(o.text) for o in outs], [o.new_tokens for o in outs]
    unfinished = [i for i, t in enumerate(texts) if t and not ends_sentence(t) and continue_tokens > 0]
    if unfinished:
        more = backend.generate(
            [prompts[i] + ("" if prompts[i][-1:].isspace() else " ") + texts[i] for i in unfinished],
            [replace(settings[i], max_new_tokens=continue_tokens) for i in unfinished],
            stop=stop, seed=seed + 1, desc="continue",
        )
        for i, out in zip(unfinished, more):
            texts[i], tokens[i] = cut(texts[i] + out.text), tokens[i] + out.new_tokens
    unfinished = set(unfinished)
    return [(t, n, i in unfinished) for i, (t, n) in enumerate(zip(texts, tokens))]


def join_opening(opening: str, text: str) -> str:
    """A spliced candidate's whole text: the parent's opening (which ends on a whole word), then what the model
    wrote after it, with a space between unless the model's text starts with punctuation."""
    if not opening:
        return text
    if not text:
        return opening
    return opening + ("" if text[0] in ".,;:!?'\")" else " ") + text


def write_candidates(backends: dict, plans: list[Plan], domain: Domain, continue_tokens: int, seed: int) -> pd.DataFrame:
    """Run the plans: one batched `generate` call per backend with per-row sampling settings, then one batched
    continuation for the candidates that stopped mid-sentence. Returns one row per plan, in plan order."""
    separator = domain.generator.separator
    texts, tokens = [""] * len(plans), [0] * len(plans)
    continued = [False] * len(plans)
    by_backend = defaultdict(list)
    for i, plan in enumerate(plans):
        by_backend[plan.expert.backend].append(i)
    for name, rows in by_backend.items():
        backend = backends[name]
        prompts = [backend.chat_prompt(plans[i].prompt) if plans[i].chat else plans[i].prompt for i in rows]
        done = complete(backend, prompts, [plans[i].expert.sampling for i in rows], continue_tokens, seed, separator)
        for i, (text, n, more) in zip(rows, done):
            text = without_list_marker(text) if plans[i].mutation == "refine" else text  # it read a numbered list
            texts[i], tokens[i], continued[i] = join_opening(plans[i].opening, text), n, more
    texts = [trim_to_last_sentence(t) for t in texts]
    controlled = {c: [(p.control or {}).get(c) for p in plans] for c in CONTROL_COLUMNS} if any(
        p.control for p in plans) else {}
    return pd.DataFrame(
        {
            "expert_id": [p.expert.expert_id for p in plans],
            "backend": [p.expert.backend for p in plans],
            "mutation": [p.mutation for p in plans],
            "genotype": [p.genotype for p in plans],
            "system_prompt": [p.expert.system_prompt for p in plans],
            "text": texts,
            "new_tokens": tokens,
            "continued": continued,
            "valid": [len(t) >= MIN_TEXT_CHARS for t in texts],
            **controlled,
        }
    )

