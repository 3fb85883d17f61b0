"""What every command-line tool shares: logging set-up and one-line errors for user mistakes."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, Callable, TypeVar

from tagclip_cls.runtime.cpu_memory import retain_freed_memory
from tagclip_cls.runtime.errors import UserError
from tagclip_cls.core.presets import available_presets


OptionsT = TypeVar("OptionsT")
CONSOLE_ARGUMENTS = ("log_level", "no_progress")


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def run_cli(main: Callable[[], int | None]) -> None:
    """Run ``main``; a :class:`UserError` is printed as ``error: ...`` and exits with status 2.

    Large freed tensors stay in the heap (:func:`retain_freed_memory`): faster on CPU, same results.
    """
    retain_freed_memory()
    try:
        code = main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except ModuleNotFoundError as err:
        print(f"error: the module {err.name!r} is missing: run `make install`, then use .venv/bin/python "
              f"(or `source .venv/bin/activate`)", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)


def add_class_arguments(parser: argparse.ArgumentParser) -> None:
    """``--dataset NAME`` or ``--classes FILE [--background FILE]``, as every stage takes them."""
    classes = parser.add_mutually_exclusive_group(required=True)
    classes.add_argument("--dataset", help=f"preset: {', '.join(available_presets())}")
    classes.add_argument("--classes", help="text file, one class name per line")
    parser.add_argument("--background", help="text file of background words (with --classes)")


def add_weight_arguments(parser: argparse.ArgumentParser) -> None:
    """``--model``, ``--pretrained`` and the text-embedding ``--cache-dir``."""
    parser.add_argument("--model", default=None,
                        help="open_clip architecture (default ViT-B-16; with a PATH: an open_clip checkpoint, "
                             "leave unset for an OpenAI checkpoint whose architecture is read from the file)")
    parser.add_argument("--pretrained", default="openai", help="open_clip tag or checkpoint PATH (default openai)")
    parser.add_argument("--cache-dir", help="text-embedding cache (default ~/.cache/tagclip/text)")


def add_console_arguments(parser: argparse.ArgumentParser) -> None:
    """``--no-progress`` and ``--log-level``, as every long-running tool takes them."""
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--log-level", default="INFO")


def options_from_args(options_type: Callable[..., OptionsT], args: argparse.Namespace,
                      drop: tuple[str, ...] = (), **values: Any) -> OptionsT:
    """Set up logging from the console arguments and build ``options_type`` from the others, by
    name; ``drop`` names arguments that ``values`` stand for (e.g. ``crf=not args.no_crf``)."""
    setup_logging(args.log_level)
    fields = {k: v for k, v in vars(args).items() if k not in (*CONSOLE_ARGUMENTS, *drop)}
    return options_type(**fields, progress=not args.no_progress, **values)
