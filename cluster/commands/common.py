"""What every command shares: a parser whose mistakes are one line, and running a
command's body so that a user mistake prints `error: ...` and exits 2, never a traceback."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from common.errors import ConfigError, SimError

EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
        raise ConfigError(message)


EXIT_SIGINT = 130  # what a shell reports for a command ended by Ctrl-C (128 + SIGINT)


def guarded(command: str, body: Callable[[], int], interrupted: str = "interrupted") -> int:
    """`body()`'s exit code; a SimError or an OSError as one line and exit 2, Ctrl-C as one
    line and exit 130. `command` prefixes the line (empty: none). A run stopped by a signal
    inside (cluster.commands.signals.Stopped, a SystemExit) has printed its line and passes
    through with its own code."""
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
        return EXIT_SIGINT
    return EXIT_USAGE


def _writable_parent(flag: str, path: Path) -> None:
    """The nearest existing folder above `path` is a folder this process can write in."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"{flag}: {parent} is a file, not a folder")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise ConfigError(f"{flag}: cannot write in {parent}")
            return


def check_output_file(flag: str, path: str, make_parents: bool = False) -> Path:
    """A file a command is about to write, checked before any work: not a folder (nor
    written as one, `out/`), in a folder that exists (or, with `make_parents`, can be made)."""
    out = Path(path)
    if not path.strip() or path.endswith(("/", os.sep)) or out.is_dir():
        raise ConfigError(f"{flag}: {path} is a folder; give a file path such as {out / 'out'}")
    if not make_parents and not out.parent.is_dir():
        raise ConfigError(f"{flag}: no such folder {out.parent}")
    _writable_parent(flag, out)
    return out


def check_output_folder(flag: str, path: str) -> Path:
    """A folder a command is about to write in (made if missing): not a file."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{flag}: {path} is a file, not a folder")
    _writable_parent(flag, out)
    return out
