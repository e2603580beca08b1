"""`equipoise.nlp` exports its names lazily: importing the package does not load transformers."""

from __future__ import annotations

import subprocess
import sys

import pytest

import equipoise.nlp as nlp
from equipoise.nlp import data, evaluate, metrics, train, trainer


def test_every_export_is_the_object_of_its_module():
    modules = {"data": data, "evaluate": evaluate, "metrics": metrics, "train": train, "trainer": trainer}
    for name, module in nlp._EXPORTS.items():
        assert getattr(nlp, name) is getattr(modules[module], name)
        assert name in modules[module].__all__
    with pytest.raises(AttributeError, match="no_such_name"):
        nlp.no_such_name  # noqa: B018


def test_importing_the_package_does_not_load_transformers():
    code = "import sys, equipoise.nlp; print('transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
