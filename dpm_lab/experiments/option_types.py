"""The types of run options' values: each parses the text of a command-line value (or an
experiment file's value, through the same parser) and refuses a bad one in one line saying what
is allowed.

Why its own module: the host folders declare their own options with these types, and the option
table (:mod:`.options`) collects those declarations through the registry; both import the types
from here.
"""
from __future__ import annotations

import argparse


def number(kind, test, allowed: str):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {allowed}") from None
        if not test(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not {allowed}")
        return value
    return parse


positive_int = number(int, lambda v: v >= 1, "an integer >= 1")
fraction = number(float, lambda v: 0 < v <= 1, "a number in (0, 1]")
open_fraction = number(float, lambda v: 0 < v < 1, "a number in (0, 1)")
val_fraction = number(float, lambda v: 0 <= v < 1, "a number in [0, 1)")
speedup = number(float, lambda v: v > 1, "a number > 1")
integer = number(int, lambda v: True, "an integer")
real = number(float, lambda v: True, "a number")


def on_off(text: str) -> bool:
    if text.lower() in ("on", "yes", "true"):
        return True
    if text.lower() in ("off", "no", "false"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not on or off")
