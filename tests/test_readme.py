"""Every command block of README.md marked runnable (``<!-- runnable -->`` on the line before) works as written.

Each such block runs as one bash script (``set -euo pipefail``: every command must exit 0, and a
later command may read what an earlier one wrote) from the repository root, with ``.venv/bin/``
standing for the folder of the Python running the tests (the same environment). Blocks marked
``<!-- runnable: EQUIPOISE_DATA -->`` read the shared data through that variable, as the README says;
they are skipped where it is not set. The folders ``results/quickstart/*`` a block writes are removed
before it runs, so that it runs as on a fresh clone (not resuming an earlier run).
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MARK = "<!-- runnable -->"
BLOCK = re.compile(r"<!-- runnable(: EQUIPOISE_DATA)? -->\s*\n```(?:bash|sh)\n(.*?)```", flags=re.S)


def runnable_blocks() -> list[tuple[str, bool, str]]:
    """``(name, needs_data, script)`` of every runnable block; the name is its line in README.md."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return [
        (f"README.md:{text.count(chr(10), 0, match.start(2)) + 1}", bool(match.group(1)), match.group(2))
        for match in BLOCK.finditer(text)
    ]


def test_readme_has_runnable_blocks():
    blocks = runnable_blocks()
    assert blocks, f"README.md has no block marked {MARK}"
    text = "\n".join(script for _, _, script in blocks)
    for domain in ("vision", "tabular", "nlp", "detection"):  # each domain's train and evaluate, as a user runs them
        assert re.search(rf"\btrain[_ ]{domain}\b", text), f"no runnable {domain} training command"
        assert re.search(rf"\beval(uate)?[_ ]{domain}\b", text), f"no runnable {domain} evaluation command"
    assert re.search(r"\bfederated simulate\b|\bsimulate_federated\b", text), "no runnable federated simulation"


@pytest.mark.parametrize("name,needs_data,script", runnable_blocks(), ids=[block[0] for block in runnable_blocks()])
def test_runnable_block(name, needs_data, script):
    if needs_data and not os.environ.get("EQUIPOISE_DATA"):
        pytest.skip("the block reads the shared data: set EQUIPOISE_DATA")
    for folder in set(re.findall(r"results/quickstart/\w+", script)):  # a first run, as on a fresh clone
        shutil.rmtree(ROOT / folder, ignore_errors=True)
    bin_dir = Path(sys.executable).parent
    script = script.replace(".venv/bin/", f"{bin_dir}/")
    environment = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=900,
    )
    output = f"{result.stdout[-3000:]}\n{result.stderr[-4000:]}"
    assert result.returncode == 0, f"the block at {name} exited {result.returncode}:\n{output}"
