"""What every command-line tool shares: logging set-up and one-line errors for user mistakes."""
from __future__ import annotations

import logging
import sys
from typing import Callable

from .errors import UserError


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def run_cli(main: Callable[[], int | None]) -> None:
    """Run ``main``; a :class:`UserError` is printed as ``error: ...`` and exits with status 2."""
    try:
        code = main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
