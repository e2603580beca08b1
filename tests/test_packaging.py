"""The distribution installs one package, ``equipoise``, and no top-level ``core`` & co."""

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUBPACKAGES = ["core", "vision", "nlp", "detection", "federated", "tabular"]


def _run_outside_repo(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )


def test_version():
    import equipoise

    assert isinstance(equipoise.__version__, str) and equipoise.__version__.count(".") >= 2


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_subpackages_import_with_docstrings(name):
    module = importlib.import_module(f"equipoise.{name}")
    assert module.__doc__ and module.__doc__.strip()
    assert Path(module.__file__).resolve().parent == ROOT / name


def test_import_from_outside_repo_and_no_top_level_core(tmp_path):
    code = (
        "import importlib.util, equipoise.core, equipoise\n"
        "assert equipoise.core.losses.available_losses()\n"
        f"bad = [n for n in {SUBPACKAGES!r} if importlib.util.find_spec(n) is not None]\n"
        "assert not bad, bad\n"
        "print('ok', equipoise.__version__)\n"
    )
    result = _run_outside_repo(code, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok ")


def test_import_core_does_not_import_heavy_dependencies(tmp_path):
    code = (
        "import sys, equipoise.core\n"
        "heavy = ('transformers', 'ray', 'timm', 'equipoise.vision', 'equipoise.federated')\n"
        "heavy = [m for m in heavy if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "print('ok')\n"
    )
    result = _run_outside_repo(code, tmp_path)
    assert result.returncode == 0, result.stderr


def test_no_bare_top_level_imports_in_package_code():
    """Only ``equipoise.core...`` imports: a bare ``import core`` would load a second copy."""
    offenders = []
    for name in SUBPACKAGES + ["tools"]:
        for path in (ROOT / name).rglob("*.py"):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                stripped = line.strip()
                for package in SUBPACKAGES:
                    if stripped.startswith((f"import {package}", f"from {package} ", f"from {package}.")):
                        offenders.append(f"{path.relative_to(ROOT)}:{number}: {stripped}")
    assert not offenders, offenders


def test_console_script_runs(tmp_path):
    script = Path(sys.executable).with_name("equipoise")
    assert script.exists(), f"console script missing at {script}"
    result = subprocess.run([str(script), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "demo" in result.stdout


def test_regular_install_layout(tmp_path):
    """A regular (non-editable) install puts equipoise/core/... in site-packages and nothing else."""
    target = tmp_path / "site"
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--disable-pip-version-check",
            "--target",
            str(target),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr
    top_level = sorted(p.name for p in target.iterdir() if not p.name.endswith((".dist-info", ".egg-info")))
    assert top_level == ["bin", "equipoise"] or top_level == ["equipoise"], top_level
    installed = target / "equipoise"
    for name in SUBPACKAGES:
        assert (installed / name / "__init__.py").is_file()
    assert (installed / "core" / "losses" / "ldam.py").is_file()
    assert not (installed / "tests").exists() and not (installed / "tools").exists()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(target)
    code = (
        "import equipoise, equipoise.core.losses as L, importlib.util\n"
        f"assert equipoise.__file__.startswith({str(target)!r}), equipoise.__file__\n"
        "assert importlib.util.find_spec('core') is None\n"
        "print(len(L.available_losses()))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) >= 13


def test_ruff_lint_is_clean():
    """The style of ../shared/STYLE.md that a linter can check (pyproject's [tool.ruff])."""
    ruff = Path(sys.executable).with_name("ruff")
    assert ruff.exists(), "ruff is installed with the test extra"
    result = subprocess.run([str(ruff), "check", "--no-cache", str(ROOT)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_clean():
    """Code (and README's Python blocks) as ``ruff format`` writes them: the formatter is the style's arbiter."""
    ruff = Path(sys.executable).with_name("ruff")
    result = subprocess.run(
        [str(ruff), "format", "--check", "--no-cache", str(ROOT)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, "run `.venv/bin/ruff format .`:\n" + result.stdout + result.stderr
