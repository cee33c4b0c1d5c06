"""Errors a user can fix: a setting (``ConfigError``) or an input file (``DataError``, ``MissingFileError``).

``main.py`` prints any :class:`UserError` as one line, ``error: <message>``, and exits with status 2; every other
exception is a bug or an accident of the machine and keeps its traceback. The message must therefore say what is
wrong and what to do, on its own. ``HYDRA_FULL_ERROR=1`` (or ``debug=...``) shows the traceback of user errors too.

``ConfigError`` and ``DataError`` are ``ValueError`` s and ``MissingFileError`` is a ``FileNotFoundError``, so code
that catches the built-in kinds keeps working. Other modules' error classes join by subclassing :class:`UserError`.
"""

from __future__ import annotations

__all__ = ["ConfigError", "DataError", "MissingFileError", "UserError"]


class UserError(Exception):
    """A mistake the user can fix; its message is shown without a traceback."""


class ConfigError(UserError, ValueError):
    """A setting is missing, unknown, or contradicts another one (``mode=``, ``ckpt_path=``, ``model=``, ...)."""


class DataError(UserError, ValueError):
    """An input (dataset file, checkpoint, word vectors) is malformed, inconsistent, or refused."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the settings point to does not exist."""
