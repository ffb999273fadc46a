"""Errors meant for the user: the CLI prints their message without a traceback and exits 1."""

from collections.abc import Iterable


def first_line(err: BaseException) -> str:
    """An exception's message in one line (decoders and loaders append pages of detail), else its type's name."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


class CpabanimError(Exception):
    """Bad input, missing weights, bad configuration: something the user can fix from the message."""


class ConfigError(CpabanimError):
    """A value in params.yaml (or a preset / override) is missing or invalid."""


class MissingWeightsError(CpabanimError):
    """Pretrained weights a component needs are absent; the message says which file, where, and how to get it."""


class DataError(CpabanimError):
    """An input video or frame folder cannot be used (unreadable, empty, too short, wrong shape)."""


def did_you_mean(word: str, candidates: Iterable[object], prefix: str = "") -> str:
    """``" (did you mean 'train'?)"`` for the candidate closest to ``word`` (:mod:`difflib`), else ``""``: the one
    suffix of every "unknown name" message (stages, commands, options, parameter keys, weights). ``prefix`` is
    shown before the suggestion, not compared (``prefix="train."`` -> ``'train.lr_generator'``)."""
    import difflib

    close = difflib.get_close_matches(str(word), [str(c) for c in candidates], n=1)
    return f" (did you mean {prefix + close[0]!r}?)" if close else ""
