"""`ltstudy cache info|clear`: the training cache's size and age, or clearing it (no torch)."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from ..engine.cache import DEFAULT_CACHE_DIR, RoundCache, human_age, human_bytes, parse_duration
from ..engine.errors import ConfigError
from ..study.paths import check_name_lengths, shown
from .common import load_study_file


def cache(args: argparse.Namespace) -> int:
    older_than = parse_duration(args.older_than) if args.older_than else None
    if older_than is not None and args.action != "clear":
        raise ConfigError("--older-than goes with `cache clear`")
    root = args.cache_dir or (load_study_file(args).cache_dir() if args.study_file else None)
    if root is None:
        root = os.environ.get("LTSTUDY_CACHE_DIR") or DEFAULT_CACHE_DIR
    check_name_lengths(root, "cache folder")
    if Path(root).exists() and not Path(root).is_dir():
        raise ConfigError(f"cache folder {shown(root)} is a file; point --cache-dir at a folder")
    store = RoundCache(root)
    if args.action == "clear":
        n, size = store.clear(older_than)
        print(f"cleared {n} entries ({human_bytes(size)}) from {root}")
        return 0
    s, now = store.stats(), time.time()
    ages = f"; oldest {human_age(now - s.oldest)} ago, newest {human_age(now - s.newest)} ago" if s.entries else ""
    temp = f"; {s.temp_files} temporary files of writers still running" if s.temp_files else ""
    print(f"{root}: {s.entries} entries, {human_bytes(s.bytes)}{ages}{temp}")
    return 0
