"""Loss terms that a distillation method sums with weights (kd/methods/*.yaml): one definition per term, one
module per family (logits.py, hidden.py, attention.py). Each term declares the teacher signal it needs, so a
method of logit-only terms trains from the cached teacher logits, the fast path, and one that needs hidden
states or attention runs the teacher online, frozen."""

from __future__ import annotations

from kd.errors import KdError
from kd.terms import attention, hidden, logits  # noqa: F401  (each family registers its terms)
from kd.terms.base import ATTENTION, HIDDEN, LOGITS, TERMS, Batch, Shapes, Side, Term, register

__all__ = ["ATTENTION", "HIDDEN", "LOGITS", "TERMS", "Batch", "Shapes", "Side", "Term", "build", "known_term",
           "register"]


def known_term(name: str, where: str) -> None:
    """One clear error for a term that is not registered (a recipe's, as it is loaded and as it is built)."""
    if name not in TERMS:
        raise KdError(f"{where}: unknown loss term {name!r} (known: {', '.join(sorted(TERMS))})")


def build(name: str, params: dict, shapes: Shapes, where: str) -> Term:
    """The term `name` with its settings (`params`, from a method's YAML at `where`): one clear error for an unknown
    term or setting."""
    known_term(name, where)
    try:
        return TERMS[name](shapes=shapes, **params)
    except TypeError as exc:
        raise KdError(f"{where}: {name}: {exc}") from None
