"""What each method was measured to need before its encoder beat a random init: ``method_needs.json`` beside this file,
written by ``scripts/learning_curves.py`` from its runs (linear-probe top-1 against the random init's, same
protocol). ``sslrun list`` shows it; a pretraining run shorter than its method's need, on data of about that size
or smaller, says so in one warning line at the start."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

NEEDS = Path(__file__).with_name("method_needs.json")


@cache
def measured() -> dict:
    try:
        return json.loads(NEEDS.read_text()).get("methods", {})
    except (OSError, ValueError):
        return {}


def describe(method: str) -> str:
    """The need in words for ``sslrun list`` ('' when unmeasured)."""
    need = measured().get(method)
    if not need:
        return ""
    value = need["epochs_to_beat_random"]
    where = need["measured_on"]
    if isinstance(value, int | float):
        return f"beat a random init after ~{value:g} epochs ({where})"
    if str(value).startswith(">"):
        return f"below a random init at {str(value)[1:].strip()} epochs ({where})"
    return f"beat a random init within {str(value)[2:].strip()} epochs ({where})"


def warning(method: str, epochs: float, train_images: int) -> str | None:
    """The start-of-run line when a run of ``epochs`` over ``train_images`` is shorter than what ``method`` needed
    on data of that size (up to twice the measured data's images): None otherwise."""
    need = measured().get(method)
    if not need or train_images > 2 * int(need.get("train_images", 0) or 0):
        return None
    value = need["epochs_to_beat_random"]
    where = f"on {need['measured_on']} ({need['train_images']} train images)"
    if isinstance(value, int | float):
        if epochs >= value:
            return None
        return (
            f"method={method} needed about {value:g} epochs to beat a random init {where}; this run has "
            f"{epochs:g}: raise trainer.max_epochs, or expect an encoder no better than a random one"
        )
    text = str(value)
    if text.startswith(">") and epochs <= float(text[1:]):
        return (
            f"method={method} did not beat a random init within {text[1:].strip()} epochs {where}; this run has "
            f"{epochs:g}: expect an encoder no better than a random one"
        )
    return None
