"""The command-line kit every CLI of the package shares (training, CAM,
data preparation, distillation tools): errors of one line that name the flag,
or the file and row, never a traceback from deep inside torch or argparse;
the parser whose usage errors are such a line; the checks of common flags."""

from __future__ import annotations

import argparse
import json
import math
import os

import torch


class CLIError(SystemExit):
    """Ends the program with the message on one line (SystemExit prints a
    string argument to stderr, exit status 1); raised by checks that know the
    flag or file."""

    def __init__(self, message: str):
        self.message = " ".join(str(message).split())
        super().__init__(f"error: {self.message}")

    def __reduce__(self):
        # Rebuilt from the message, not from args (which already say
        # "error: "): the error of a run in a worker process arrives as raised.
        return (type(self), (self.message,))


class InputError(ValueError):
    """Bad input to a library function, named by its argument, in one line:
    ``argument: message``; ``.argument`` is the parameter's name (a CLI turns
    it into its flag)."""

    def __init__(self, argument: str, message: str):
        self.argument = argument
        self.message = " ".join(str(message).split())
        super().__init__(f"{argument}: {self.message}")

    def __reduce__(self):
        return (type(self), (self.argument, self.message))


class CLIParser(argparse.ArgumentParser):
    """argparse's parser whose usage errors are one ``CLIError`` line too
    (argparse prints the usage first), for every CLI of the package; the
    description (a module's docstring) is shown as written."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        raise CLIError(f"{self.prog}: {message}")


def _bounded(kind, low, strict: bool = False, most=None):
    """An argparse ``type=``: ``kind`` (int or float) of the text, finite
    and >= ``low`` (> ``low`` when ``strict``; <= ``most`` when given);
    otherwise a usage error that argparse prints as one line naming the flag."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(f"{value:g} must be {'>' if strict else '>='} {low}")
        if most is not None and value > most:
            raise argparse.ArgumentTypeError(f"{value:g} must be at most {most}")
        return value

    parse.__name__ = kind.__name__
    return parse


# The largest image side a CLI accepts: beyond it a model's activations
# outgrow any machine's memory, and the failure would come minutes later,
# deep inside an allocation.
MAX_IMAGE_SIDE = 4096

non_negative_int = _bounded(int, 0)
positive_int = _bounded(int, 0, strict=True)
image_side = _bounded(int, 0, strict=True, most=MAX_IMAGE_SIDE)  # pixels
finite_non_negative_float = _bounded(float, 0)  # weights, rates
positive_float = _bounded(float, 0, strict=True)


def check_device(text: str) -> torch.device:
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise CLIError(f"--device {text!r}: not a device (cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise CLIError(f"--device {text}: CUDA is not available on this machine (torch {torch.__version__})")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise CLIError(f"--device {text}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type != "cpu":
        raise CLIError(f"--device {text}: only cpu and cuda are supported")
    return device


def check_file(path: str | None, flag: str) -> str:
    if not path:
        raise CLIError(f"{flag} is required")
    if not os.path.isfile(path):
        raise CLIError(f"{flag} {path}: no such file")
    return path


def check_dir(path: str, flag: str) -> str:
    if not os.path.isdir(path):
        raise CLIError(f"{flag} {path}: no such folder")
    return path


def parse_json(text: str, flag: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise CLIError(f"{flag}: not valid JSON ({e.msg} at character {e.pos}): {text!r}") from None
    if not isinstance(value, dict):
        raise CLIError(f"{flag}: must be a JSON object ({{...}}), got {text!r}")
    return value


def parse_ints(text: str | None, flag: str) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise CLIError(f"{flag} {text!r}: expected comma-separated integers such as 3,3,3,2") from None
    if any(v <= 0 for v in values):
        raise CLIError(f"{flag} {text!r}: every value must be positive")
    return values


def check_out_dir(path: str | None, flag: str = "--out") -> str | None:
    """An output folder the tool makes later: an existing file at ``path``
    (or above it) is refused now, before any work."""
    if path:
        head = os.path.abspath(path)
        while head and not os.path.exists(head):
            head = os.path.dirname(head)
        if head and not os.path.isdir(head):
            where = "" if head == os.path.abspath(path) else f" ({head} is a file)"
            raise CLIError(f"{flag} {path}: is a file, not a folder{where}")
    return path


def check_out_file(path: str, flag: str) -> str:
    """A file the tool writes: a folder at ``path`` is refused now."""
    if os.path.isdir(path):
        raise CLIError(f"{flag} {path}: is a folder; give the file to write")
    check_out_dir(os.path.dirname(path), flag)
    return path


def not_utf8(path: str, error: UnicodeDecodeError) -> str:
    """The one line for a text file (a CSV) that is not UTF-8: the file and
    the first bad byte."""
    bad = error.object[error.start : error.start + 1]
    return f"{path}: not UTF-8 text (byte {error.start} is {bad!r}); save it as UTF-8"
