"""What every command shares: a parser whose mistakes are one line, and running a
command's body so that a user mistake prints `error: ...` and exits 2, never a traceback."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from common.errors import ConfigError, SimError

EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
        raise ConfigError(message)


def guarded(command: str, body: Callable[[], int], interrupted: str = "interrupted") -> int:
    """`body()`'s exit code; a SimError, an OSError or Ctrl-C as one line and exit 2.
    `command` prefixes the line (empty: none)."""
    prefix = f"error: {command}: " if command else "error: "
    try:
        return body()
    except SimError as exc:
        print(prefix + " ".join(str(exc).splitlines()), file=sys.stderr)
    except BrokenPipeError:
        raise  # the reader left: the command line's own handler says nothing and exits 141
    except OSError as exc:
        print(f"{prefix}{exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
    except KeyboardInterrupt:
        print(f"{prefix}{interrupted}", file=sys.stderr)
    return EXIT_USAGE
