"""Agreement figures between two backends' outputs: max |difference| and cosine similarity per output."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wm_vla.runtime.errors import ParityError


@dataclass(frozen=True)
class Agreement:
    max_abs: float
    cosine: float

    def to_json(self) -> dict[str, float]:
        return {"max_abs": self.max_abs, "cosine": self.cosine}


def agreement(reference: np.ndarray, other: np.ndarray) -> Agreement:
    """Max |a - b| and the cosine similarity of the flattened arrays (1.0 for two all-zero arrays)."""
    a = np.asarray(reference, np.float64).ravel()
    b = np.asarray(other, np.float64).ravel()
    if a.shape != b.shape:
        raise ParityError(f"cannot compare outputs of shapes {np.shape(reference)} and {np.shape(other)}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return Agreement(float("inf"), float("nan"))
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    cos = 1.0 if na == 0 and nb == 0 else float(a @ b / max(na * nb, 1e-300))
    return Agreement(float(np.abs(a - b).max(initial=0.0)), cos)


def compare(reference: dict[str, np.ndarray], other: dict[str, np.ndarray]) -> dict[str, Agreement]:
    """Agreement of every output the two share (by name)."""
    return {name: agreement(reference[name], other[name]) for name in reference if name in other}


def require(figures: dict[str, Agreement], max_abs: float | None = None, min_cosine: float | None = None,
            what: str = "backend") -> None:
    """Raise ParityError naming every output beyond tolerance."""
    bad = [f"{name}: max|d|={a.max_abs:.3g} cosine={a.cosine:.6f}" for name, a in figures.items()
           if (max_abs is not None and not a.max_abs <= max_abs) or (min_cosine is not None and not a.cosine >= min_cosine)]
    if bad:
        limits = ", ".join(x for x in (f"max|d| <= {max_abs}" if max_abs is not None else "",
                                       f"cosine >= {min_cosine}" if min_cosine is not None else "") if x)
        raise ParityError(f"{what} disagrees with the reference ({limits}): " + "; ".join(bad))
