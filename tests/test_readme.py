"""README's Python examples run as written (and keep running as the API moves)."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_has_examples():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_example_runs(code, capsys):
    exec(compile(code, str(README), "exec"), {"__name__": "__readme__"})


def test_ci_runs_readme_commands_verbatim():
    commands = re.findall(r"```bash\n(.*?)\n```", README.read_text(encoding="utf-8"), flags=re.S)
    assert len(commands) == 2, "README gives exactly two set-up commands"
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    for command in commands:
        assert command in ci, f"README command not run by .ci/run: {command}"
