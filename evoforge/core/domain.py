"""A domain says what to evolve: the generator prompt, the seed pool, the quality question and the measure axes.

Domains are YAML files under `data/domains/`. A broken file raises `DomainError` naming the file, the field and
what is expected, so a user can fix it without reading this code.
"""

import re
from pathlib import Path

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DOMAINS_DIR = Path(__file__).resolve().parents[2] / "data" / "domains"
# A seed-pool item longer than this is refused: a few-shot prompt holds several items plus the generator's output,
# and judges read only the first 1,500 characters of a text; SmolLM2's context is 8,192 tokens.
MAX_ITEM_CHARS = 2000


def read_utf8(path: Path, what: str) -> str:
    """A text file's content, or a DomainError that names the file, the field and the fix for bytes that are not
    UTF-8."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DomainError(f"{path}: {what} is not UTF-8 text (bad byte at offset {err.start}): save it as UTF-8") from None


class DomainError(ValueError):
    """A domain file that cannot be used, with the file and the field that is wrong."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Generator(_Strict):
    template: str = Field(min_length=1, description="The line that opens each few-shot item, e.g. 'Here is a ...:'")
    separator: str = Field(default="\n###\n", min_length=1, description="Text between few-shot items")
    system_prompts: list[str] = Field(min_length=1, description="Lines placed before the examples; experts draw one")


class Question(_Strict):
    """A two-answer question for the judges: quality (yes/no) or one measure axis (label A / label B)."""

    labels: tuple[str, str] = Field(description="The two answers; the score is P(first label)")
    instructions: list[str] = Field(min_length=1, description="One phrasing per judge")
    poles: tuple[str, str] | None = Field(
        None, description="What a text at each answer reads like, for embedding judges (e.g. 'A horror story.'); "
        "default for an axis: the domain's description and 'This one is <label>.'"
    )

    @field_validator("labels")
    @classmethod
    def _distinct(cls, labels):
        if labels[0].strip().lower() == labels[1].strip().lower() or not all(l.strip() for l in labels):
            raise ValueError("expected two different, non-empty labels, e.g. [positive, negative]")
        return labels


class Axis(Question):
    name: str = Field(min_length=1, pattern=r"^[a-z][a-z0-9_]*$", description="lower-case identifier")
    bins: list[float] = Field(min_length=1, description="Inner bin boundaries, strictly increasing inside (0, 1)")

    @field_validator("bins")
    @classmethod
    def _increasing(cls, bins):
        if any(not 0.0 < b < 1.0 for b in bins):
            raise ValueError("expected every boundary strictly between 0 and 1")
        if any(b >= c for b, c in zip(bins, bins[1:])):
            raise ValueError("expected strictly increasing boundaries, e.g. [0.05, 0.2, 0.5, 0.8, 0.95]")
        return bins

    @property
    def num_bins(self) -> int:
        return len(self.bins) + 1


class Domain(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    description: str = ""
    generator: Generator
    seed_pool: Path = Field(description="Seed pool file, one item per line, relative to the domain file")
    references: Path | None = Field(
        None, description="CSV of labelled texts (column text, then one column per question: 1 first label, "
        "0 second, empty unknown), relative to the domain file; used to measure and calibrate judges",
    )
    quality: Question
    axes: list[Axis] = Field(min_length=1, max_length=2)

    @model_validator(mode="after")
    def _unique_axes(self):
        names = [a.name for a in self.axes]
        if len(set(names)) != len(names):
            raise ValueError(f"axes: expected unique axis names, got {names}")
        return self

    @property
    def axis_names(self) -> list[str]:
        return [a.name for a in self.axes]

    @property
    def grid_shape(self) -> tuple[int, ...]:
        return tuple(a.num_bins for a in self.axes)

    @property
    def answer_labels(self) -> list[str]:
        return answer_labels([self.quality, *self.axes])

    def load_pool(self) -> list[str]:
        """The seed pool's items, one per non-blank line."""
        if not self.seed_pool.is_file():
            raise DomainError(f"domain '{self.name}': seed_pool file {self.seed_pool} does not exist")
        lines = read_utf8(self.seed_pool, "field 'seed_pool'").splitlines()
        too_long = [(n, len(line.strip())) for n, line in enumerate(lines, 1) if len(line.strip()) > MAX_ITEM_CHARS]
        if too_long:
            n, chars = too_long[0]
            raise DomainError(f"{self.seed_pool}: field 'seed_pool' line {n}: {chars} characters, over the limit of "
                              f"{MAX_ITEM_CHARS} (few-shot prompts of such items overflow a small model's context); "
                              "shorten it or split it into several items")
        items = [line.strip() for line in lines if line.strip()]
        if len(items) < 3:
            raise DomainError(
                f"{self.seed_pool}: expected at least 3 items (one per line) for a 3-shot prompt, found {len(items)}"
            )
        return items

    def load_references(self) -> pd.DataFrame | None:
        """The reference labels: `text`, then `quality` and one column per axis with 1, 0 or NaN (unknown)."""
        if self.references is None:
            return None
        if not self.references.is_file():
            raise DomainError(f"domain '{self.name}': references file {self.references} does not exist")
        try:
            frame = pd.read_csv(self.references, encoding="utf-8")
        except UnicodeDecodeError as err:
            raise DomainError(f"{self.references}: field 'references' is not UTF-8 text (bad byte at offset "
                              f"{err.start}): save it as UTF-8") from None
        except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
            raise DomainError(f"{self.references}: field 'references' is not a readable CSV file ({err})") from None
        expected = ["text", "quality", *self.axis_names]
        missing = [c for c in expected if c not in frame.columns]
        if missing:
            raise DomainError(f"{self.references}: expected columns {expected}, missing {missing}")
        for column in expected[1:]:
            values = pd.to_numeric(frame[column], errors="coerce")
            bad = frame[column].notna() & ~values.isin([0, 1])
            if bad.any():
                row = int(bad.idxmax()) + 2  # 1-based, after the header line
                raise DomainError(f"{self.references}: column '{column}' line {row}: expected 1 (first label), "
                                  f"0 (second label) or empty, got {frame[column][bad.idxmax()]!r}")
            frame[column] = values.astype(float)
        return frame[expected]

    def check_files(self) -> "Domain":
        """Read the seed pool and the references once, so a broken file is refused before anything starts."""
        self.load_pool()
        self.load_references()
        return self


def answer_labels(questions) -> list[str]:
    """Every label the questions answer with (what a text that talks to its judge tends to name)."""
    return sorted({label for q in questions for label in q.labels})


def field_path(loc: tuple, flags: bool = False) -> str:
    """A validation error's field as `axes.0.bins` (as a flag, `--finetune.every`, with `flags`); odd keys from a
    file are quoted, so the error stays one line."""
    parts = []
    for p in loc:
        if re.fullmatch(r"[A-Za-z0-9_]+", str(p)):
            parts.append(str(p).replace("_", "-") if flags else str(p))
        else:
            parts.append(repr(p))
    return ".".join(parts)


def domain_path(name_or_path: str | Path) -> Path:
    """A shipped domain's file by name (`opinions`), or any YAML file by path."""
    path = Path(name_or_path)
    if path.suffix in {".yaml", ".yml"}:
        return path
    path = DOMAINS_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        shipped = sorted(p.stem for p in DOMAINS_DIR.glob("*.yaml"))
        raise DomainError(f"unknown domain '{name_or_path}': expected one of {shipped} or a path to a .yaml file")
    return path


def load_domain(name_or_path: str | Path) -> Domain:
    path = domain_path(name_or_path)
    try:
        raw = yaml.safe_load(read_utf8(path, "the domain file"))
    except FileNotFoundError:
        raise DomainError(f"{path}: domain file does not exist") from None
    except yaml.YAMLError as err:
        raise DomainError(f"{path}: not valid YAML: {' '.join(str(err).split())}") from None  # one line
    if not isinstance(raw, dict):
        raise DomainError(f"{path}: expected a mapping with keys name, generator, seed_pool, quality, axes")
    for key in ("seed_pool", "references"):
        if isinstance(raw.get(key), str):
            raw[key] = (path.parent / raw[key]).resolve()
    try:
        return Domain.model_validate(raw)
    except ValidationError as err:
        problems = "; ".join(
            f"field '{field_path(e['loc']) or '(top level)'}': {e['msg']}"
            + (f" (got {e['input']!r})" if e["type"] != "missing" and not isinstance(e["input"], dict) else "")
            for e in err.errors()
        )
        raise DomainError(f"{path}: {problems}") from None
