"""What every command-line tool shares: one vocabulary of arguments, logging set-up, and
one-line errors for user mistakes (exit status 2; 130 after Ctrl-C).

Nothing here imports torch: every tool parses and checks its arguments
(:mod:`~tagclip_cls.runtime.arguments`) before its heavy imports, so ``--help`` and mistakes
answer at once. The kit sits above :mod:`tagclip_cls.core`, whose presets and batchings its flags
offer, and below the stages and tools that use it."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any, Callable, NoReturn, TypeVar

from tagclip_cls.runtime.cpu_memory import retain_freed_memory
from tagclip_cls.runtime.errors import UserError, one_line
from tagclip_cls.runtime.numbers import parse_float, parse_int
from tagclip_cls.runtime.precision import ATTENTION_MODES, PRECISIONS
from tagclip_cls.core.batches import BATCHINGS
from tagclip_cls.core.presets import available_presets


OptionsT = TypeVar("OptionsT")
CONSOLE_ARGUMENTS = ("log_level", "no_progress")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class _OpenClipChatter(logging.Filter):
    """open_clip logs on the root logger at INFO for every model and tokenizer load ("Parsing
    tokenizer identifier", "Attempting to load config", ...): those are shown at DEBUG only."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and f"{os.sep}open_clip{os.sep}" in record.pathname:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger().isEnabledFor(logging.DEBUG)
        return True


class ToolParser(argparse.ArgumentParser):
    """The argument parser of every tool: the module docstring as description, and a mistake
    answered in one line (``error: ...``, exit status 2) instead of usage plus error."""

    def __init__(self, description: str | None, **kwargs: Any):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(description=description, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {one_line(message)} (see {one_line(self.prog)} --help)\n")


def int_at_least(low: int) -> Callable[[str], int]:
    """An argparse ``type``: a whole number in ASCII digits, at least ``low`` (checked while
    parsing, so a mistake is one line before anything loads)."""
    def parse(text: str) -> int:
        value = parse_int(text)
        if value is None or value < low:
            raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number of at least {low}")
        return value
    return parse


def float_between(low: float, high: float, include_low: bool = True) -> Callable[[str], float]:
    """An argparse ``type``: a finite decimal number from ``low`` (or just above, unless
    ``include_low``) to ``high``; nan and inf are refused."""
    def parse(text: str) -> float:
        value = parse_float(text)
        if value is None or value > high or value < low or (value == low and not include_low):
            bound = "from" if include_low else "above"
            raise argparse.ArgumentTypeError(f"{text!r}: expected a number {bound} {low:g} to {high:g}")
        return value
    return parse


#: argparse types of the numbers tools take: sizes and counts of at least 1, worker and thread
#: counts where 0 means "inline", thresholds in [0, 1], confidences in (0, 1]
POSITIVE = int_at_least(1)
COUNT = int_at_least(0)
FRACTION = float_between(0.0, 1.0)
CONFIDENCE = float_between(0.0, 1.0, include_low=False)


def setup_logging(level: str = "INFO") -> None:
    """Log lines with time, level and module at ``level`` (one of :data:`LOG_LEVELS`)."""
    logging.basicConfig(level=getattr(logging, level.upper()),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _OpenClipChatter) for f in handler.filters):
            handler.addFilter(_OpenClipChatter())


def run_cli(main: Callable[[], int | None]) -> None:
    """Run ``main``; a :class:`UserError` is printed as ``error: ...``, on one line whatever
    names it quotes (:func:`one_line`), and exits with status 2.

    Large freed tensors stay in the heap (:func:`retain_freed_memory`): faster on CPU, same results.
    A character the console's encoding lacks (a class name 'café' under ``LANG=C``) is printed
    escaped, never a ``UnicodeEncodeError`` after the work is done.
    """
    retain_freed_memory()
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    try:
        code = main()
    except UserError as err:
        print(f"error: {one_line(str(err))}", file=sys.stderr)
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
    classes.add_argument("--dataset", choices=available_presets(), help="class preset")
    classes.add_argument("--classes", help="text file, one class name per line")
    parser.add_argument("--background", help="text file of background words (with --classes)")


def add_weight_arguments(parser: argparse.ArgumentParser) -> None:
    """``--model``, ``--pretrained`` and the text-embedding ``--cache-dir``."""
    parser.add_argument("--model", default=None,
                        help="open_clip architecture (default ViT-B-16; with a PATH: an open_clip checkpoint, "
                             "leave unset for an OpenAI checkpoint whose architecture is read from the file)")
    parser.add_argument("--pretrained", default="openai", help="open_clip tag or checkpoint PATH (default openai)")
    parser.add_argument("--cache-dir", help="text-embedding cache (default ~/.cache/tagclip/text)")


def add_device_arguments(parser: argparse.ArgumentParser, what: str = "the CLIP stages") -> None:
    """``--device``, ``--precision`` and ``--attention``, meaning the same in every tool."""
    parser.add_argument("--device", default="cpu",
                        help=f"cpu, cuda or cuda:N for {what} (under torchrun: each rank its LOCAL_RANK GPU)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="fp32 reproduces the published numbers; tf32: float32 with a GPU's TensorFloat-32 "
                             "matrix products; bf16/fp16 run the model under autocast to that type (refused on a "
                             "CPU without native support)")
    parser.add_argument("--attention", choices=ATTENTION_MODES, default=argparse.SUPPRESS,
                        help="exact: explicit softmax in every layer, as published; fused: "
                             "scaled_dot_product_attention in the layers whose attention weights nobody reads "
                             "(default: fused on a GPU, exact on a CPU)")


def add_batch_arguments(parser: argparse.ArgumentParser) -> None:
    """``--batch-size`` and ``--batching``, meaning the same in both CLIP stages."""
    parser.add_argument("--batch-size", type=POSITIVE, default=1, help="images per forward pass (default 1)")
    parser.add_argument("--batching", choices=BATCHINGS, default=argparse.SUPPRESS,
                        help="grid: a pass holds images of one input grid; mixed: any sizes, padded and masked "
                             "(default: mixed on a GPU, grid on a CPU)")


def add_image_arguments(parser: argparse.ArgumentParser) -> None:
    """``--max-side``, ``--max-pixels``, ``--no-fp16-pos`` and ``--loader-threads``: how both CLIP
    stages read and embed their images. ``--max-pixels``: image files with more pixels are skipped
    as unreadable, judged from their header before anything is decoded (a 20 KB PNG can claim
    13000 x 13000 and decode to gigabytes)."""
    parser.add_argument("--max-side", type=POSITIVE, default=argparse.SUPPRESS,
                        help="longer image sides are scaled down to this (default 1024, in both stages)")
    parser.add_argument("--max-pixels", type=POSITIVE, default=argparse.SUPPRESS,
                        help="skip images of more pixels, from their header, without decoding them (default "
                             "100000000: three such images in flight fit in half of a 24 GiB machine)")
    parser.add_argument("--no-fp16-pos", action="store_true",
                        help="don't round the positional table to fp16 (the published code does)")
    parser.add_argument("--loader-threads", type=COUNT,
                        help="threads decoding the next images; in stage 2 above 0 half as many write the outputs "
                             "in the background (default: half the cores, at least 2, on a GPU; 0 on a CPU)")


def add_console_arguments(parser: argparse.ArgumentParser) -> None:
    """``--no-progress`` and ``--log-level``, as every long-running tool takes them."""
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS, default="INFO",
                        help="how much to log (default INFO)")


def add_cfg_options_argument(parser: argparse.ArgumentParser) -> None:
    """``--cfg-options KEY=VALUE ...``: stage-3 config overrides, kept as text until
    :func:`cfg_options_dict` parses them (mmengine loads only after the arguments are checked)."""
    parser.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override config entries, e.g. train_cfg.max_iters=1000 (values as mmengine reads them)")


def add_launcher_argument(parser: argparse.ArgumentParser) -> None:
    """``--launcher``, mmengine's job launchers (resolved after parsing: ``pytorch`` under torchrun)."""
    parser.add_argument("--launcher", choices=("none", "pytorch", "slurm", "mpi"),
                        help="job launcher (default: pytorch under torchrun, else none)")


def cfg_options_dict(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` texts parsed as mmengine's ``DictAction`` parses them (numbers, lists, tuples)."""
    malformed = next((item for item in items if "=" not in item), None)
    if malformed is not None:
        raise UserError(f"--cfg-options {malformed!r}: expected KEY=VALUE")
    if not items:
        return {}
    from mmengine.config import DictAction

    namespace = argparse.Namespace()
    DictAction(option_strings=["--cfg-options"], dest="cfg_options")(argparse.ArgumentParser(), namespace, items)
    return namespace.cfg_options


def options_from_args(options_type: Callable[..., OptionsT], args: argparse.Namespace,
                      drop: tuple[str, ...] = (), **values: Any) -> OptionsT:
    """Set up logging from the console arguments and build ``options_type`` from the others, by
    name; ``drop`` names arguments that ``values`` stand for (e.g. ``crf=not args.no_crf``)."""
    setup_logging(args.log_level)
    fields = {k: v for k, v in vars(args).items() if k not in (*CONSOLE_ARGUMENTS, *drop)}
    return options_type(**fields, progress=not args.no_progress, **values)
