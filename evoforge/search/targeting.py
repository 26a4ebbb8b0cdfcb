"""Niche-targeted LMX (`search: target`): each candidate is aimed at one cell of the grid.

The 135M judges rarely score a text near 0 or 1, while the published grids put most of their cells there, so QD
is decided by how often a method writes a text beyond the archive's frontier. Random sampling does that by luck;
plain LMX does it less often (its examples pull toward the pool). Targeting does it on purpose:

1. pick a target cell (`target_weights`): an empty cell next to a filled one (the frontier, where a child of a
   nearby elite lands with the most chance), an empty cell at an extreme of an axis (the direction to push), or
   a filled cell whose elite is weak (room to improve). With an empty archive only the extremes are aimed at.
2. take the few-shot examples from the elites nearest to the target (`nearest_elites`), the nearest one last,
   right before the open line: heritability is weak (~0.3), so the examples must already lean the right way;
3. name the niche in the prompt: every example's template line says its own niche, and the open line asks for
   the target's (`labelled_prompt`), so the model sees the mapping from the words to the texts in context.

`search: splice` keeps the targets and adds heritability: the candidate starts with the opening sentences of the
elite nearest to the target (its parent), under an open line naming the target's niche, and the model writes the
rest. A child resembles its parent far more than a few-shot example makes it, so a run climbs, generation by
generation, toward the cells random sampling reaches only by luck (`splice_plan`).

`search: refine` is Mixture-of-Agents as an operator: the 2-3 elites nearest the target are shown to the model
as references, and it is asked to combine what is best in them into one new text of the target's niche
(`refine_plan`).

Every draw comes from the generation's rng, so a run stays reproducible and resumable.
"""

import numpy as np
import pandas as pd

from evoforge.core.domain import Domain
from evoforge.core.niches import niche_prompt, niche_wish
from evoforge.core.prompts import aggregate_prompt, sentence_ends

# Share of a splice batch written from scratch (aimed at the target, no opening): splicing climbs from the elites it
# has, and the rare far-out texts it climbs from are found by sampling. Half and half, by design, not tuned.
SPLICE_EXPLORATION = 0.5

# Relative weights of the kinds of target. They are ratios between kinds of cell, not tuned to a domain: a
# frontier cell that is also an extreme counts twice; a weak elite's cell counts at most half a frontier cell.
FRONTIER, EXTREME, WEAK = 1.0, 1.0, 0.5


def filled_grid(elites: pd.DataFrame, axis_names: list[str], shape: tuple[int, ...]) -> np.ndarray:
    """Elite quality per cell, NaN where empty."""
    grid = np.full(shape, np.nan)
    if len(elites):
        bins = elites[[f"bin_{a}" for a in axis_names]].to_numpy(dtype=int)
        grid[tuple(bins.T)] = elites["quality"].to_numpy(dtype=float)
    return grid


def frontier_mask(filled: np.ndarray) -> np.ndarray:
    """Empty cells with a filled neighbour (cells that differ by at most one bin on every axis)."""
    padded = np.pad(filled, 1, constant_values=False)
    near = np.zeros_like(filled)
    for offset in np.ndindex(*(3,) * filled.ndim):
        near |= padded[tuple(slice(o, o + n) for o, n in zip(offset, filled.shape))]
    return near & ~filled


def extreme_mask(shape: tuple[int, ...]) -> np.ndarray:
    """Cells in the first or last bin of some axis."""
    index = np.indices(shape)
    return np.any([(index[j] == 0) | (index[j] == n - 1) for j, n in enumerate(shape)], axis=0)


def target_weights(quality: np.ndarray) -> np.ndarray:
    """Weight of each cell as a target, from the grid of elite qualities (NaN: empty). Sums to 1."""
    filled = ~np.isnan(quality)
    weights = FRONTIER * frontier_mask(filled) + EXTREME * (extreme_mask(quality.shape) & ~filled)
    weights = weights + WEAK * np.where(filled, 1.0 - np.nan_to_num(quality), 0.0)
    if weights.sum() <= 0:  # every cell filled with a perfect elite: nothing to improve, aim anywhere
        weights = np.ones(quality.shape)
    return weights / weights.sum()


def pick_target(elites: pd.DataFrame, axis_names: list[str], shape: tuple[int, ...], rng: np.random.Generator) -> tuple[int, ...]:
    """One target cell (bin index per axis), drawn by `target_weights`."""
    weights = target_weights(filled_grid(elites, axis_names, shape))
    flat = int(rng.choice(weights.size, p=weights.ravel()))
    return tuple(int(i) for i in np.unravel_index(flat, shape))


def nearest_elites(elites: pd.DataFrame, axis_names: list[str], target: tuple[int, ...], k: int,
                   rng: np.random.Generator) -> pd.DataFrame:
    """The `k` elites nearest to `target` (Euclidean distance in bins; ties in random order), farthest first, so
    the nearest ends up right before the open line."""
    if len(elites) == 0:
        return elites
    bins = elites[[f"bin_{a}" for a in axis_names]].to_numpy(dtype=float)
    distance = np.linalg.norm(bins - np.asarray(target, dtype=float), axis=1)
    order = np.lexsort((rng.random(len(elites)), distance))[:k]
    return elites.iloc[order[::-1]]


def niche_template(template: str, wish: str | None) -> str:
    """The domain's template line naming a niche: 'Here is a random opinion piece ..., one whose sentiment is
    very negative:'. No wish: the plain template."""
    if wish is None:
        return template
    return f"{template.rstrip().rstrip(':')}, one whose {wish}:"


def labelled_prompt(system_prompt: str, template: str, examples: list[tuple[str, str | None]], target_wish: str,
                    separator: str) -> str:
    """A completion-style few-shot prompt whose template lines name each example's niche (None: unnamed, for
    unjudged pool items), ending on an open line that names the target's niche."""
    shots = "".join(f"{niche_template(template, wish)}\n{text}{separator}" for text, wish in examples)
    return f"{system_prompt}\n\n{shots}{niche_template(template, target_wish)}\n"


def target_genotype(domain: Domain, pool: list[str], elites: pd.DataFrame, shots: int, rng: np.random.Generator,
                    cell: tuple[int, ...] | None = None) -> tuple[tuple[int, ...], list[tuple[str, str | None]]]:
    """A target cell (`cell`, else drawn by `pick_target`) and its few-shot examples: the nearest elites, topped up
    with random pool items (unnamed) while the archive holds fewer elites than shots."""
    target = cell or pick_target(elites, domain.axis_names, domain.grid_shape, rng)
    near = nearest_elites(elites, domain.axis_names, target, shots, rng)
    bins = near[[f"bin_{a}" for a in domain.axis_names]].to_numpy(dtype=int) if len(near) else []
    examples = [(text, niche_wish(domain, list(b))) for text, b in zip(near["text"] if len(near) else [], bins)]
    missing = shots - len(examples)
    if missing > 0:
        picks = rng.choice(len(pool), size=missing, replace=len(pool) < missing)
        examples = [(pool[int(i)], None) for i in picks] + examples
    return target, examples


def sentence_openings(text: str) -> list[str]:
    """The text's first sentence, first two sentences, ... up to all but the last (none for one sentence)."""
    stripped = text.strip()
    return [stripped[:e].strip() for e in sentence_ends(stripped) if e < len(stripped)]


def word_opening(text: str, rng: np.random.Generator) -> str:
    """A third to two thirds of the text's words (drawn uniformly), cut at a word boundary; empty under 3 words."""
    words = text.split()
    if len(words) < 3:
        return ""
    keep = int(rng.integers(-(-len(words) // 3), -(-2 * len(words) // 3) + 1))
    return " ".join(words[:keep])


def opening(text: str, rng: np.random.Generator) -> str:
    """The part of a parent a spliced child keeps: its first k sentences, k drawn from 1 to all but the last, so
    children vary from near-copies to new texts after the first sentence; a text of one sentence keeps a third to
    two thirds of its words. Whole sentences carry a parent's stance when its opening states it: measured on
    `opinions` (benchmarks/heritability.py), 92% of the children that kept the first sentence of a parent at 0.987
    scored beyond it, and none of a parent at 0.957 whose stance came later (README, "Search against random
    search")."""
    openings = sentence_openings(text)
    if openings:
        return openings[int(rng.integers(len(openings)))]
    return word_opening(text.strip(), rng)


# `search: refine`: how many elites nearest the target the aggregator reads, and how many of their characters (a
# small model follows a short prompt better, and every prompt token costs time on a CPU). MoA's 2-3 references.
REFINE_PARENTS = 3
REFINE_CHARS = 900


def refine_plan(domain: Domain, elites: pd.DataFrame, rng: np.random.Generator) -> tuple[tuple[int, ...], list[str], str]:
    """`search: refine` (Mixture-of-Agents as an operator): a target cell, the texts of the REFINE_PARENTS elites
    nearest to it (the parents, nearest last), and the chat instruction asking to combine them into one new text
    of the target's niche (`aggregate_prompt`). While the archive is empty, no parents and the plain niche
    instruction."""
    target = pick_target(elites, domain.axis_names, domain.grid_shape, rng)
    near = nearest_elites(elites, domain.axis_names, target, REFINE_PARENTS, rng)
    parents = [str(t) for t in near["text"]] if len(near) else []
    wish = niche_wish(domain, list(target))
    prompt = aggregate_prompt(parents, REFINE_CHARS, f"{domain.description} Texts close to the goal:",
                              f"Combine what is best in them into one new text whose {wish}. Reply with the text "
                              "only.")
    return target, parents, prompt or niche_prompt(domain, list(target))


def splice_plan(domain: Domain, elites: pd.DataFrame, rng: np.random.Generator) -> tuple[tuple[int, ...], str]:
    """A target cell and the opening of its parent, the elite nearest to it (empty while the archive is).

    No few-shot examples: shown whole, other elites pull the child toward their own cells, and shown the parent,
    the model copies it."""
    target = pick_target(elites, domain.axis_names, domain.grid_shape, rng)
    near = nearest_elites(elites, domain.axis_names, target, 1, rng)
    return target, (opening(str(near["text"].iloc[-1]), rng) if len(near) else "")
