"""Every command block of README.md marked runnable (``<!-- runnable -->`` on the line before) works as written.

Each line of such a block is run from the repository root, with ``.venv/bin/`` standing for the
folder of the Python running the tests (the same environment), and must exit 0.
"""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MARK = "<!-- runnable -->"


def runnable_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = []
    for block in re.findall(re.escape(MARK) + r"\s*\n```(?:bash|sh)\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            line = line.split("  #", 1)[0].strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def test_readme_has_runnable_blocks():
    assert runnable_commands(), f"README.md has no block marked {MARK}"


@pytest.mark.parametrize("command", runnable_commands())
def test_runnable_command(command):
    bin_dir = Path(sys.executable).parent
    arguments = shlex.split(command)
    if arguments[0].startswith(".venv/bin/"):
        arguments[0] = str(bin_dir / arguments[0].removeprefix(".venv/bin/"))
    environment = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(arguments, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=300)
    output = f"{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    assert result.returncode == 0, f"{command!r} exited {result.returncode}:\n{output}"
