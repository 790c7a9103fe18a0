"""Every code block of README.md and docs/**/*.md runs as printed.

How blocks run:

- ```` ```python ```` blocks of one page run in order, in one namespace (a page is one
  program: a later block may use what an earlier one defined), with a fresh temporary
  directory as the working directory and ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY`` pointing at
  the local fake server (``tests/openai_server.py``), so ``openai.OpenAI()`` reaches it.
  ``LOCAL_OPENAI_URL`` points there too: the local-models recipe reads it in place of a local
  llama.cpp or Ollama server. ``__name__`` is ``"__main__"``, as for a script, and the
  repository root is on ``sys.path``, as in a checkout (``from examples.fastapi_app import``).
- ```` ```bash ````, ```` ```sh ```` and ```` ```console ```` blocks run one by one with
  ``bash -euo pipefail`` in the same directory as the page's python blocks (after them), the
  venv's ``bin`` first on ``PATH``; in a ``console`` block only the lines after a ``$ ``
  prompt run (the rest is output).
- Snippets (``--8<-- "path"``) are read from the file they name, as mkdocs does.
- Blocks in any other language (``json``, ``text``: responses, signatures, printed reports)
  are not code to run.

Exemptions, each one visible as a skipped test with its reason:

1. A block right after an HTML comment ``<!-- docs-test: skip REASON -->`` in the page (for
   example code of packages that are not test dependencies, or a server that runs forever).
2. A bash block that runs ``pip install`` (it would install over the venv under test, or
   needs the network): the README's two opening commands (the second is what ``.ci/run``
   runs, so it would recurse), install lines. The README's first command is still checked:
   :func:`test_readme_first_command_runs_the_demo` runs the step after its install.
3. A section snippet (``--8<-- "file:section"``): a fragment of a file; the whole file is
   run elsewhere (``examples/fastapi_app.py`` in the FastAPI recipe and its own tests).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from openai_server import FakeOpenAI

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
RUN_LANGUAGES = {"python", "py", "bash", "sh", "console"}
SKIP_MARK = re.compile(r"<!--\s*docs-test:\s*skip\b\s*(.*?)\s*-->")
SNIPPET = re.compile(r'^(\s*)--8<--\s+"([^"]+)"\s*$')
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)[^`]*$")
BIN = Path(sys.executable).parent


@dataclass
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    language: str
    code: str
    skip: str | None = None  # why it does not run, if it does not

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


@dataclass
class Page:
    path: Path
    blocks: list[Block] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.path.relative_to(ROOT))


def _snippet(spec: str) -> tuple[str, bool]:
    """The text a snippet line stands for, and whether it is a whole file."""
    path, _, section = spec.partition(":")
    text = (ROOT / path).read_text()
    if not section:
        return text, True
    start, end = f"--8<-- [start:{section}]", f"--8<-- [end:{section}]"
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if start in line)
    last = next(i for i, line in enumerate(lines) if end in line)
    return "\n".join(lines[first + 1 : last]) + "\n", False


def _dedent(lines: list[str], indent: str) -> list[str]:
    return [line[len(indent) :] if line.startswith(indent) else line.lstrip() for line in lines]


def parse(path: Path) -> Page:
    """The page's fenced blocks, with the skip reason of those that do not run."""
    page, lines = Page(path), path.read_text().splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, language = m.group(1), m.group(2), m.group(3).lower()
        start, body = i, []
        i += 1
        while i < len(lines) and not (lines[i].strip() == fence and lines[i].startswith(indent)):
            body.append(lines[i])
            i += 1
        i += 1
        body = _dedent(body, indent)
        skip = None
        before = [line for line in lines[max(0, start - 3) : start] if line.strip()]
        for line in before:
            if mark := SKIP_MARK.search(line):
                skip = f"marked in the page: {mark.group(1) or 'no reason given'}"
        code: list[str] = []
        for line in body:
            snip = SNIPPET.match(line)
            if not snip:
                code.append(line)
                continue
            text, whole = _snippet(snip.group(2))
            if not whole and skip is None:
                skip = f"a fragment of {snip.group(2).partition(':')[0]}, which runs whole"
            code.extend(text.splitlines())
        source = "\n".join(code) + "\n"
        if language in ("bash", "sh", "console") and skip is None and "pip install" in source:
            skip = "runs pip install"
        page.blocks.append(Block(path, start + 1, language, source, skip))
    return page


ALL = [parse(p) for p in PAGES]


def _python_pages() -> list[Page]:
    return [p for p in ALL if any(b.language in ("python", "py") for b in p.blocks)]


def _shell_blocks() -> list[Block]:
    return [b for p in ALL for b in p.blocks if b.language in ("bash", "sh", "console")]


def _skipped_python() -> list[Block]:
    return [
        b for p in ALL for b in p.blocks if b.language in ("python", "py") and b.skip is not None
    ]


@pytest.fixture(scope="session")
def page_dirs(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Path], Path]:
    """One working directory per page, shared by its python and its shell blocks (the python
    blocks run first: a shell block may use the files they made)."""
    made: dict[Path, Path] = {}

    def get(page: Path) -> Path:
        if page not in made:
            made[page] = tmp_path_factory.mktemp(page.stem)
        return made[page]

    return get


def _docs_env(monkeypatch: pytest.MonkeyPatch, server: FakeOpenAI, where: Path) -> Path:
    """The page's directory as cwd, the fake server as the OpenAI endpoint, the venv first on
    PATH, the repository root importable."""
    monkeypatch.chdir(where)
    monkeypatch.syspath_prepend(str(ROOT))
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-docs-test")
    monkeypatch.setenv("LOCAL_OPENAI_URL", server.url)
    monkeypatch.delenv("CHATLEDGER_URL", raising=False)
    monkeypatch.setenv("PATH", f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    return where


@pytest.mark.parametrize("page", _python_pages(), ids=lambda p: p.name)
def test_python_blocks_of_a_page_run(
    page: Page,
    server: FakeOpenAI,
    page_dirs: Callable[[Path], Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The page's python blocks, in order, in one namespace."""
    _docs_env(monkeypatch, server, page_dirs(page.path))
    namespace: dict[str, object] = {"__name__": "__main__"}
    for block in page.blocks:
        if block.language not in ("python", "py") or block.skip is not None:
            continue
        monkeypatch.setattr(sys, "argv", [block.where])
        try:
            exec(compile(block.code, block.where, "exec"), namespace)
        except BaseException as exc:
            raise AssertionError(f"the block at {block.where} failed: {exc!r}") from exc


@pytest.mark.parametrize("block", _skipped_python(), ids=lambda b: b.where)
def test_python_blocks_not_run(block: Block) -> None:
    """Python blocks exempted by a rule of this module's docstring, listed as skips."""
    assert block.skip
    pytest.skip(block.skip)


@pytest.mark.parametrize("block", _shell_blocks(), ids=lambda b: b.where)
def test_shell_block_runs(
    block: Block,
    server: FakeOpenAI,
    page_dirs: Callable[[Path], Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if block.skip is not None:
        pytest.skip(block.skip)
    where = _docs_env(monkeypatch, server, page_dirs(block.page))
    script = block.code
    if block.language == "console":
        script = "\n".join(line[2:] for line in block.code.splitlines() if line.startswith("$ "))
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=where,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, (
        f"{block.where} exited {done.returncode}\n--- stdout\n{done.stdout}"
        f"\n--- stderr\n{done.stderr}"
    )


def test_readme_first_command_runs_the_demo(
    server: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README opens with the command that runs the main job offline; past its install
    step (exempt: rule 2) it runs here, with this venv standing in for the one it creates."""
    first = next(b for b in ALL[0].blocks if b.language == "bash")
    steps = [s.strip() for s in first.code.strip().split("&&")]
    assert steps[0] == "python3 -m venv .venv" and "pip install" in steps[1], first.code
    run = [s.replace(".venv/bin/", f"{BIN}/") for s in steps[2:]]
    where = _docs_env(monkeypatch, server, tmp_path)
    assert run and "chatledger demo" in run[-1], first.code
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", " && ".join(run)],
        cwd=where,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "window for" in done.stdout


def test_readme_second_command_is_what_ci_runs() -> None:
    """The README's test command (exempt from running here: it is the whole CI) is the line
    ``.ci/run`` executes, so it stays true."""
    second = [b for b in ALL[0].blocks if b.language == "bash"][1]
    command = second.code.strip()
    assert command in (ROOT / ".ci" / "run").read_text().splitlines()


def test_every_page_is_parsed() -> None:
    """A fence the parser misread would silently drop blocks: every page's fences pair up."""
    for page in ALL:
        fences = [line for line in page.path.read_text().splitlines() if FENCE.match(line)]
        assert len(fences) == 2 * len(page.blocks), page.name
