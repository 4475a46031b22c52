"""The README's "Looking at results" runs as written: every snippet, in order, in an empty
directory. A ```python block is exec'd (the blocks share one namespace, as a notebook's
cells do); a bare ``` block (or ```sh, ```shell, ```bash, ```console) is shell, each line a
`wafersim ...` command, run as `python -m cluster.commands.cli ...`, or a `python ...` one
(a trailing `> FILE` writes its output there). Any other language (```toml, ```text) is
not run. Placeholders (`<!-- ...-snippet -->`) are not code: a snippet that fills one is
picked up as it lands."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pytest

from tests.conftest import ROOT

SECTION = "## Looking at results"
SHELL = {"", "sh", "shell", "bash", "console"}
FENCE = re.compile(r"^```([\w+-]*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)


def section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    return text[start:] if end < 0 else text[start:end]


def snippets() -> list[tuple[str, str]]:
    """(language, code) of every fenced block in the section, in order."""
    return [(lang.lower(), code) for lang, code in FENCE.findall(section())]


def shell_commands(code: str) -> list[tuple[list[str], str | None]]:
    """Each command of a shell block as argv (python's own interpreter in place of
    `wafersim`/`python`) and the file its output goes to, if redirected."""
    out = []
    for line in code.replace("\\\n", " ").splitlines():
        argv = shlex.split(line, comments=True)
        if not argv:
            continue
        target = None
        if len(argv) > 2 and argv[-2] == ">":
            argv, target = argv[:-2], argv[-1]
        if argv[0] == "wafersim":
            argv = [sys.executable, "-m", "cluster.commands.cli", *argv[1:]]
        elif argv[0] in ("python", "python3"):
            argv = [sys.executable, *argv[1:]]
        else:
            pytest.fail(f"README {SECTION}: cannot run {line!r} (only wafersim and python commands)")
        if any(tok in ("|", "&&", ";", "<", ">", ">>") for tok in argv):
            pytest.fail(f"README {SECTION}: {line!r}: one plain command a line")
        out.append((argv, target))
    return out


def test_the_section_has_snippets_of_both_kinds():
    langs = [lang for lang, _ in snippets()]
    assert "python" in langs and any(lang in SHELL for lang in langs)


def test_every_snippet_of_looking_at_results_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")  # plots save or show without a display
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path}
    namespace: dict = {"__name__": "__readme__"}
    ran = 0
    for i, (lang, code) in enumerate(snippets()):
        where = f"README.md, {SECTION}, snippet {i + 1}"
        if lang == "python":
            exec(compile(code, where, "exec"), namespace)  # noqa: S102 (the README's own code)
        elif lang in SHELL:
            for argv, target in shell_commands(code):
                proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
                assert proc.returncode == 0, f"{where}: {shlex.join(argv)}\n{proc.stderr}"
                if target:
                    (tmp_path / target).write_text(proc.stdout)
        else:
            continue
        ran += 1
    assert ran >= 2
