"""Options that set a field of a settings dataclass: the field is the option's destination and its
default, so a command builds its settings from the parsed arguments without restating either."""

from __future__ import annotations

import argparse
from dataclasses import fields


def add_setting(parser: argparse.ArgumentParser, flag: str, defaults, field: str, text: str, **options) -> None:
    """Add ``flag`` for ``defaults``' field ``field``, its default shown after ``text``."""
    parser.add_argument(flag, dest=field, default=getattr(defaults, field), help=f"{text} (default %(default)s)",
                        **options)


def settings_from(args: argparse.Namespace, cls, **values):
    """``cls`` (a settings dataclass) from the arguments named as its fields, and ``values``."""
    names = {field.name for field in fields(cls)}
    return cls(**{name: value for name, value in vars(args).items() if name in names}, **values)
