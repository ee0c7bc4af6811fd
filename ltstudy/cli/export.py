"""`ltstudy export`: one ticket of a study written to a folder (and logged to its trial's MLflow run)."""

from __future__ import annotations

import argparse
import sys

from ..study.export import export_ticket
from .common import check_folder, load_study_file


def export(args: argparse.Namespace) -> int:
    cfg = load_study_file(args)
    check_folder(args.out, "--out")
    done = export_ticket(cfg, args.storage or cfg.study.storage, args.study_name or cfg.study.name, args.trial,
                         args.round, args.seed, args.out, cfg.tracking_uri(args.tracking_uri),
                         None if args.no_cache or not cfg.study.cache else cfg.cache_dir(args.cache_dir))
    print(done.summary())
    for warning in done.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0
