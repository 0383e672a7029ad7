"""Experiment files: one small TOML file per paper row or ablation (``configs/``), read into the
axes of a grid of runs.

Why: a paper row or an ablation is a set of runs that belong together. Written down as a file
whose fields are named as :class:`dpm_lab.experiments.runspec.RunSpec`'s, it is reproduced with one
command (``python -m dpm_lab sweep configs/mini/core_comparison.toml``) and reviewed in a diff. A
field holds one value or a list; a list is an axis of the grid, as several values of an option are
on the ``sweep`` command line. Each value goes through the command line's own parser for that
option, so a file accepts and refuses exactly what the command line does, and a bad value is
reported in one line naming the file, the field and what is allowed.
"""
from __future__ import annotations

import argparse
import difflib
import tomllib
from pathlib import Path

from .options import RUN_OPTIONS
from .profiles import PROFILE_NAMES
from .runspec import FIELDS

FILE_FIELDS = ("description",) + FIELDS
# Per field, the command line's parsing keywords (type, choices). ``--profile`` is not in the
# shared option table because every command has it, with the same choices.
_PARSING = {dest: kw for _, dest, kw in RUN_OPTIONS} | {"profile": {"choices": PROFILE_NAMES}}


def load_experiment(path: str | Path) -> dict[str, list]:
    """The grid axes of the experiment file at ``path``: every RunSpec field it sets, with its
    checked values as a list (one value becomes a one-element list). ``description`` is checked
    and left out. Raises ``ValueError`` in one line naming the file, the field and what is
    allowed."""
    try:
        with open(path, "rb") as f:
            table = tomllib.load(f)
    except OSError as err:
        raise ValueError(f"cannot read experiment file {path}: {err.strerror}") from None
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path}: not a valid TOML file: {err}") from None
    axes = {}
    for name, value in table.items():
        if name not in FILE_FIELDS:
            raise ValueError(f"{path}: unknown field {name!r}{_did_you_mean(name)}; allowed "
                             f"fields: {', '.join(FILE_FIELDS)}")
        if name == "description":
            if not isinstance(value, str):
                raise ValueError(f"{path}: field description must be a string, got {value!r}")
            continue
        values = value if isinstance(value, list) else [value]
        if not values:
            raise ValueError(f"{path}: field {name} is an empty list; give a value or a list")
        axes[name] = [_parsed(path, name, v) for v in values]
    return axes


# a field written as its command-line option ("targets", "t-rate") names the field it stands for
_OPTION_FIELDS = {flag.lstrip("-").replace("-", "_"): dest
                  for flags, dest, _ in RUN_OPTIONS for flag in flags}


def _did_you_mean(name: str) -> str:
    """" (did you mean 't_rate'?)" for a field name close to a field's, or to an option's."""
    key = name.lstrip("-").replace("-", "_")
    if key in _OPTION_FIELDS and _OPTION_FIELDS[key] != name:
        return f" (did you mean {_OPTION_FIELDS[key]!r}?)"
    close = difflib.get_close_matches(key, list(FILE_FIELDS) + list(_OPTION_FIELDS), n=1)
    return f" (did you mean {_OPTION_FIELDS.get(close[0], close[0])!r}?)" if close else ""


def _parsed(path: str | Path, name: str, value):
    """``value`` parsed as the command line parses the text of the same option."""
    parsing = _PARSING[name]
    try:
        parsed = parsing.get("type", str)(str(value))
    except argparse.ArgumentTypeError as err:
        raise ValueError(f"{path}: field {name}: {err}") from None
    choices = parsing.get("choices")
    if choices is not None and parsed not in choices:
        raise ValueError(f"{path}: field {name}: {value!r} is not allowed; choose one of: "
                         f"{', '.join(choices)}")
    return parsed
