"""Configuration: a typed dataclass becomes command-line flags, and smoke mode shrinks it.

    @dataclass
    class TrainConfig:
        lr: float = 3e-4          # becomes --lr 3e-4
        smoke: bool = False       # --smoke, --smoke true, --no-smoke
    cfg = parse_config(TrainConfig, description=__doc__, smoke=SMOKE)  # --smoke: a run of seconds

Simplifications:
1. Flags cover int, float, str, bool, Literal choices and Optional of those; no lists or nesting.
"""

import argparse
import dataclasses
import types
import typing

from nanollm.errors import ConfigError


_TRUE_WORDS = ("true", "yes", "1", "on")
_FALSE_WORDS = ("false", "no", "0", "off")
_NONE_WORDS = ("none", "null")


def _parse_bool(text):
    word = text.lower()
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got '{text}'")


def _unwrap_optional(annotation):
    """Optional[X] / X | None -> (X, True); anything else -> (annotation, False)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(annotation)) == 2:
            return args[0], True
    return annotation, False


def _value_parser(base, optional):
    """The argparse `type=` callable for one field: text -> value (or None for 'none')."""
    parse = _parse_bool if base is bool else base

    def parse_value(text):
        if optional and text.lower() in _NONE_WORDS:
            return None
        return parse(text)

    # argparse names the type in its errors ("invalid int value: 'x'").
    parse_value.__name__ = base.__name__
    return parse_value


def _field_default(field):
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def _add_field(parser, field, annotation):
    base, optional = _unwrap_optional(annotation)
    flag = f"--{field.name}"
    default = _field_default(field)
    help_text = field.metadata.get("help", "").replace("%", "%%")  # argparse formats with %
    # SUPPRESS: a flag not given leaves no attribute, so parse_config knows what was given and
    # the dataclass supplies the default
    kwargs = {"dest": field.name, "default": argparse.SUPPRESS}
    if default is dataclasses.MISSING:
        kwargs.update(required=True, help=f"{help_text} (required)".strip())
    else:
        shown = str(default).replace("%", "%%")
        kwargs.update(help=f"{help_text} (default: {shown})".strip())

    if typing.get_origin(base) is typing.Literal:
        choices = typing.get_args(base)
        parser.add_argument(flag, type=type(choices[0]), choices=choices, **kwargs)
    elif base is bool:
        # --flag, --flag true, --flag false, --no-flag all work.
        parser.add_argument(flag, type=_value_parser(bool, optional), nargs="?", const=True,
                            metavar="{true,false}", **kwargs)
        # SUPPRESS: this second flag must not supply a default of its own for the same field.
        parser.add_argument(f"--no-{field.name}", dest=field.name, action="store_false",
                            default=argparse.SUPPRESS, help=f"same as {flag} false")
    elif base in (int, float, str):
        parser.add_argument(flag, type=_value_parser(base, optional), metavar=base.__name__.upper(),
                            **kwargs)
    else:
        raise TypeError(f"parse_config: field '{field.name}' has type {annotation}; "
                        "only int, float, str, bool, Literal and Optional of those become flags")


class _Parser(argparse.ArgumentParser):
    """argparse, whose mistakes (an unknown flag, a bad value) are one-line ConfigErrors
    instead of a usage block."""

    def error(self, message):
        raise ConfigError(f"{message} (see --help)")


def parse_config(cls, argv=None, description=None, smoke=None):
    """Build an instance of dataclass `cls` from command-line flags (`--name value`).

    argv defaults to sys.argv[1:]. Help text comes from field(metadata={"help": ...}). An unknown
    flag or a bad value raises a ConfigError naming it. smoke: {field: value} applied when the
    config's `smoke` field is true, to every field not given on the command line, so
    `--smoke --max_steps 50` keeps the 50 (and `--smoke --n_head 4` the 4, default or not).
    """
    # Raw description: a script's docstring keeps its line breaks and examples in --help.
    parser = _Parser(description=description or cls.__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    # get_type_hints resolves string annotations (from `from __future__ import annotations`).
    hints = typing.get_type_hints(cls, include_extras=False)
    for field in dataclasses.fields(cls):
        if field.init:
            _add_field(parser, field, hints[field.name])
    given = vars(parser.parse_args(argv))  # only the flags on the command line
    cfg = cls(**given)
    if smoke and getattr(cfg, "smoke", False):
        cfg = dataclasses.replace(cfg, **{k: v for k, v in smoke.items() if k not in given})
    return cfg


def config_to_dict(cfg):
    """A dataclass config as a plain dict (for checkpoints and logs)."""
    return dataclasses.asdict(cfg)


def check_flags(cfg, positive=(), non_negative=(), fractions=(), at_most=None):
    """Stop with a ConfigError naming the first flag out of its range: `positive` names flags
    that must be > 0 (sizes, counts, steps, rates), `non_negative` >= 0, `fractions` in [0, 1),
    at_most {"stop_at": "max_steps"} flags no larger than another one. Checked before any work,
    so a bad flag costs a second, not a run."""
    for names, ok, expected in ((positive, lambda v: v > 0, "a positive number"),
                                (non_negative, lambda v: v >= 0, "zero or more"),
                                (fractions, lambda v: 0 <= v < 1, "in [0, 1)")):
        for name in names:
            value = getattr(cfg, name)
            if value is not None and not ok(value):
                raise ConfigError(f"--{name} {value}: expected {expected}")
    for name, limit in (at_most or {}).items():
        if getattr(cfg, name) > getattr(cfg, limit):
            raise ConfigError(f"--{name} {getattr(cfg, name)} is past --{limit} "
                              f"{getattr(cfg, limit)}")
