"""Model versions ``X.Y``: stateless model X after Y stateful updates. Pure arithmetic, no I/O.

A stateless retrain starts a new line: ``(X+1).0``, X being the highest major of that model name.
A fine-tune (a stateful update) of ``X.Y`` makes ``X.(Y+1)``.

Two fine-tunes of one parent are refused, not branched: the second one would also be ``X.(Y+1)``,
and a number that could name two different models would stop saying what the model is. So the
lineage inside one major is a single chain ``X.0 -> X.1 -> ...``: "3.12" always means the same
twelve updates of the same retrain, and only the newest version of a major can be fine-tuned.
To go on from an older one, retrain stateless (a new major, recording the old version as its
parent) or fine-tune the newest. The refusal names the version that already exists.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from cl_hpc.dag.names import RUN_ID
from cl_hpc.errors import ClHpcError


class RegistryError(ClHpcError):
    """A model registry request cannot be met (unknown name, version or alias; a lineage conflict)."""


# Every strategy is one of two kinds of update; the hybrid ones alternate between them.
STRATEGIES: dict[str, str] = {
    "stateless": "stateless",
    "stateful": "stateful",
    "hybrid-stateless": "stateless",
    "hybrid-stateful": "stateful",
}

# fullmatch, never match with "$": "$" also matches before a trailing newline ("champion\n").
_VERSION = re.compile(r"(\d+)\.(\d+)")
# Aliases start with a letter so that "1.2" can only ever be a version.
_ALIAS = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
# A model name (by default the pipeline's) is drawn from the run id's safe set: one definition.
_NAME = RUN_ID


@dataclass(frozen=True, order=True)
class Version:
    major: int  # the stateless retrain (1-based)
    minor: int  # stateful updates since that retrain

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"


def parse_version(text: str | Version) -> Version:
    """``"3.12"`` -> Version(3, 12); numeric, so 3.12 sorts after 3.9."""
    if isinstance(text, Version):
        return text
    match = _VERSION.fullmatch(str(text).strip())
    if not match or int(match.group(1)) < 1:
        raise RegistryError(f"{text!r} is not a model version: expected X.Y with X >= 1 and Y >= 0 "
                            f"(X: stateless retrain, Y: stateful updates since), e.g. 1.0 or 3.12")
    return Version(int(match.group(1)), int(match.group(2)))


def is_version(text: str) -> bool:
    return bool(_VERSION.fullmatch(text.strip()))


def sort_versions(versions: Iterable[Version]) -> list[Version]:
    return sorted(versions)


def next_stateless(existing: Iterable[Version]) -> Version:
    """A retrain from scratch: one more than the highest major, update count 0."""
    return Version(max((v.major for v in existing), default=0) + 1, 0)


def next_stateful(parent: Version, existing: Iterable[Version]) -> Version:
    """A fine-tune of ``parent``: one more update on the same major; refused if taken (see module doc)."""
    taken = set(existing)
    child = Version(parent.major, parent.minor + 1)
    if child in taken:
        tip = max(v for v in taken if v.major == parent.major)
        raise RegistryError(f"{child} already exists: {parent} was fine-tuned before, and a version number "
                            f"names one model only. The newest of major {parent.major} is {tip}: fine-tune "
                            f"{tip}, or register a stateless retrain (it would be {next_stateless(taken)})")
    return child


def strategy_kind(strategy: str) -> str:
    """"stateless" or "stateful" for a known strategy name."""
    if strategy not in STRATEGIES:
        raise RegistryError(f"strategy {strategy!r} is not one of {', '.join(STRATEGIES)}")
    return STRATEGIES[strategy]


def check_alias(alias: str) -> str:
    if not isinstance(alias, str) or not _ALIAS.fullmatch(alias):
        raise RegistryError(f"alias {alias!r} is not valid: a letter, then up to 63 letters, digits, '_', '.' "
                            f"or '-' (e.g. champion, challenger, canary-eu)")
    return alias


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise RegistryError(f"model name {name!r} is not valid: a letter or digit, then up to 127 letters, "
                            f"digits, '_', '.' or '-' (e.g. retrain)")
    return name
