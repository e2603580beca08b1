"""List, describe and download the weights of the equipoise model zoo (equipoise.zoo).

Examples:
    .venv/bin/python tools/download_zoo.py list
    .venv/bin/python tools/download_zoo.py info resnet50.tv_in1k
    .venv/bin/python tools/download_zoo.py download mobilenet_v2.tv_in1k
    .venv/bin/python tools/download_zoo.py download my_model --index team_zoo.json --cache-dir /data/zoo

Entries come from the index shipped with equipoise, then the files in $EQUIPOISE_ZOO_INDEX
(separated by os.pathsep), then --index (a later entry of the same name overrides an earlier one).
Downloads go to $EQUIPOISE_CACHE/zoo (default ~/.cache/equipoise/zoo), resume a cut transfer and
are verified by size and full sha256 before use; the path of the verified file is printed.
"""

from __future__ import annotations

import sys

from equipoise.cli import main as equipoise_main


def main(argv: list[str] | None = None) -> int:
    """``equipoise zoo ...``: the same commands and options."""
    return equipoise_main(["zoo", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
