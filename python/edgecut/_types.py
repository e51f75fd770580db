"""Types of the values edgecut returns."""

from __future__ import annotations

from typing import TypedDict


class RerankResult(TypedDict):
    """One document's relevance: its ``index`` in the input, ``score`` (0..1, the logistic of
    the logit) and the raw ``logit``."""

    index: int
    score: float
    logit: float
