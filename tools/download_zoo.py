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

import argparse
import sys

from equipoise.zoo import download, entry_info, list_entries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--index", action="append", metavar="PATH", help="an extra index file (repeatable), read after the others"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands.add_parser(
        "list", parents=[common], help="one line per entry: name, architecture, dataset, method, metrics, size"
    )
    info = commands.add_parser(
        "info", parents=[common], help="every field of an entry, its index file and whether it is cached"
    )
    info.add_argument("name", help="an entry name (see `list`)")
    info.add_argument("--cache-dir", metavar="DIR", help="the cache folder (default: $EQUIPOISE_CACHE/zoo)")
    fetch = commands.add_parser(
        "download", parents=[common], help="download and verify an entry's file, then print its path"
    )
    fetch.add_argument("name", help="an entry name (see `list`)")
    fetch.add_argument("--cache-dir", metavar="DIR", help="the cache folder (default: $EQUIPOISE_CACHE/zoo)")
    fetch.add_argument("--offline", action="store_true", help="use the cache only (also EQUIPOISE_OFFLINE=1)")
    fetch.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)

    try:
        if args.command == "list":
            for entry in list_entries(args.index):
                print(entry.summary())
        elif args.command == "info":
            print(entry_info(args.name, index=args.index, cache_dir=args.cache_dir))
        else:
            offline = True if args.offline else None
            path = download(
                args.name, cache_dir=args.cache_dir, index=args.index, progress=not args.no_progress, offline=offline
            )
            print(path)
    except (ValueError, OSError) as error:  # a bad name or index, a refused file, no network: one clear line
        parser.exit(1, f"error: {error}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
