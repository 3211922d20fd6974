"""`lightning-matting weights list|download`: the official checkpoints, and fetching them before going offline."""

from __future__ import annotations

import argparse
import sys

from lightning_matting.models.loading import load_model
from lightning_matting.models.weights import OFFICIAL_WEIGHTS, cache_dir, cached_path, fetch


def main(args: list[str]) -> int:
    """Run `weights list` or `weights download NAME... | all`; returns the exit status.

    Args:
        args: The arguments after `weights` (`["download", "rvm-mobilenetv3"]`).

    Returns:
        0 when everything asked for is listed, or cached and loading into its variant; 1 when a download or
        the strict load failed (its message on stderr); 2 for bad arguments.
    """
    parser = argparse.ArgumentParser(
        prog="lightning-matting weights",
        description=f"The official checkpoints; downloads land in {cache_dir()}.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="variant, file, size, source URL and whether it is cached")
    download = commands.add_parser(
        "download", help="download checkpoints into the cache and check that each loads into its variant"
    )
    download.add_argument("names", nargs="+", metavar="NAME", help=f"{', '.join(OFFICIAL_WEIGHTS)} or all")
    try:
        options = parser.parse_args(args)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    if options.command == "list":
        _list()
        return 0
    names = list(OFFICIAL_WEIGHTS) if "all" in options.names else options.names
    unknown = [name for name in names if name not in OFFICIAL_WEIGHTS]
    if unknown:
        print(
            f"lightning-matting weights download: no official checkpoint for {', '.join(unknown)}; "
            f"expected any of {', '.join(OFFICIAL_WEIGHTS)} or all",
            file=sys.stderr,
        )
        return 2
    failed = 0
    for name in dict.fromkeys(names):
        try:
            path = fetch(OFFICIAL_WEIGHTS[name])
            load_model(name, path)  # a wrong or damaged file is named now, not when the machine is offline
            print(f"{name}: {path}")
        except (OSError, ValueError) as error:
            print(f"{name}: {error}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


def _list() -> None:
    rows = [("variant", "file", "size", "cached", "source")]
    for name, file in OFFICIAL_WEIGHTS.items():
        path = cached_path(file)
        cached = path.is_file()
        size = path.stat().st_size if cached else file.size
        rows.append((name, file.file_name, _megabytes(size), "yes" if cached else "no", file.url))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1])
    print(f"cache: {cache_dir()}")


def _megabytes(size: int | None) -> str:
    return "?" if size is None else f"{size / 1e6:.1f} MB"
