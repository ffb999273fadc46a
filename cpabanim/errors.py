"""Errors meant for the user: the CLI prints their message without a traceback and exits 1."""


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
