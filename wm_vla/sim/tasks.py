"""Task families and natural-language instructions of the sim worlds."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from wm_vla.sim.errors import UnknownTaskError

COLOURS: dict[str, tuple[float, float, float, float]] = {
    "red": (0.86, 0.14, 0.12, 1.0),
    "green": (0.14, 0.66, 0.22, 1.0),
    "blue": (0.15, 0.32, 0.92, 1.0),
    "yellow": (0.95, 0.82, 0.08, 1.0),
}
ARM_COLOURS = ("red", "green", "blue")
MARKER_COLOURS = ("red", "green", "blue", "yellow")
PUSH_SIDES = ("left", "right")

# family -> (template, regex). Colour/side slots are validated against the world's lists.
_TEMPLATES: dict[str, tuple[str, str]] = {
    "touch": ("touch the {colour} cube", r"touch the (?P<colour>\w+) cube"),
    "push": ("push the {colour} cube to the {goal} target", r"push the (?P<colour>\w+) cube to the (?P<goal>\w+) target"),
    "place": ("put the {colour} cube in the bowl", r"put the (?P<colour>\w+) cube in the bowl"),
    "goto": ("go to the {colour} marker", r"go to the (?P<colour>\w+) marker"),
}
WORLD_FAMILIES: dict[str, tuple[str, ...]] = {"arm": ("touch", "push", "place"), "quadruped": ("goto",)}
_WORLD_COLOURS: dict[str, tuple[str, ...]] = {"arm": ARM_COLOURS, "quadruped": MARKER_COLOURS}


@dataclass(frozen=True)
class Task:
    """One task instance: a family, a target colour and, for pushes, a goal side."""

    family: str
    colour: str
    goal: str | None = None

    @property
    def instruction(self) -> str:
        return _TEMPLATES[self.family][0].format(colour=self.colour, goal=self.goal)


def _check_world(world: str) -> None:
    if world not in WORLD_FAMILIES:
        raise UnknownTaskError(f"no tasks for world {world!r}; worlds: {', '.join(WORLD_FAMILIES)}")


def describe_tasks(world: str) -> str:
    """Human-readable list of the instructions a world accepts."""
    _check_world(world)
    fams = [_TEMPLATES[f][0] for f in WORLD_FAMILIES[world]]
    return "; ".join(fams) + f" (colours: {', '.join(_WORLD_COLOURS[world])}" + (
        f"; goals: {', '.join(PUSH_SIDES)})" if world == "arm" else ")")


def parse_instruction(world: str, text: str) -> Task:
    """Parse an instruction such as "push the red cube to the left target" into a Task."""
    _check_world(world)
    clean = " ".join(str(text).strip().lower().rstrip(".!").split())
    for family in WORLD_FAMILIES[world]:
        match = re.fullmatch(_TEMPLATES[family][1], clean)
        if match is None:
            continue
        colour = match.group("colour")
        if colour not in _WORLD_COLOURS[world]:
            raise UnknownTaskError(f"unknown colour {colour!r} in {text!r}; {describe_tasks(world)}")
        goal = match.groupdict().get("goal")
        if family == "push" and goal not in PUSH_SIDES:
            raise UnknownTaskError(f"unknown push target {goal!r} in {text!r}; {describe_tasks(world)}")
        return Task(family, colour, goal)
    raise UnknownTaskError(f"instruction {text!r} is not understood by the {world!r} world; {describe_tasks(world)}")


def check_families(world: str, family: str | Sequence[str] | None) -> tuple[str, ...]:
    """The task families to draw from: all of the world's (None), one, or several; unknown names raise."""
    _check_world(world)
    known = WORLD_FAMILIES[world]
    chosen = known if family is None else (family,) if isinstance(family, str) else tuple(family)
    bad = [f for f in chosen if f not in known]
    if bad or not chosen:
        raise UnknownTaskError(f"unknown task family {', '.join(bad) or '(none given)'} for world {world!r}; "
                               f"families: {', '.join(known)}")
    return chosen


def families_in_vocab(world: str, vocab: Sequence[str]) -> tuple[str, ...]:
    """The families whose instruction verb a policy has seen in training (its vocabulary), in the world's order."""
    _check_world(world)
    words = set(vocab)
    return tuple(f for f in WORLD_FAMILIES[world] if _TEMPLATES[f][0].split()[0] in words)


def sibling_tasks(world: str, task: Task) -> tuple[Task, ...]:
    """The same task aimed at each of the world's other colours (hindsight instruction relabelling)."""
    _check_world(world)
    return tuple(Task(task.family, c, task.goal) for c in _WORLD_COLOURS[world] if c != task.colour)


def sample_task(world: str, rng: np.random.Generator, family: str | Sequence[str] | None = None) -> Task:
    """Draw a task uniformly over families (all, one, or the given several), colours and goals."""
    families = check_families(world, family)
    fam = families[0] if len(families) == 1 else families[int(rng.integers(len(families)))]
    colours = _WORLD_COLOURS[world]
    colour = colours[int(rng.integers(len(colours)))]
    goal = PUSH_SIDES[int(rng.integers(2))] if fam == "push" else None
    return Task(fam, colour, goal)
