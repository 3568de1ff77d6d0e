"""``ubenchai compare``, ``report`` and ``records``: what a results directory holds, compared, reported or
converted."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..metrics import baselines, compare, record_files
from ..metrics.files import write_json
from ..metrics.results import RESULTS, ResultsDir
from ..recipes.schema import Regression
from ..report import standalone
from .console import EXIT_OK, EXIT_RESULTS, EXIT_SLO, EXIT_USAGE, err, json_option, page


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cmp = sub.add_parser("compare", help="compare two result directories case by case (exit 1 on regression)")
    cmp.add_argument("baseline", type=Path, metavar="BASELINE_DIR",
                     help="a baseline directory (ubench-baselines/NAME) or a results directory")  # fmt: skip
    cmp.add_argument("current", type=Path, metavar="CURRENT_DIR", help="a results directory (ubench-results/<run>)")
    rules = Regression()
    cmp.add_argument("--min-change", type=float, default=rules.min_change,
                     help=f"relative change that can count (default {rules.min_change:g})")  # fmt: skip
    cmp.add_argument("--alpha", type=float, default=rules.alpha,
                     help=f"chance that an unchanged case fails (default {rules.alpha:g})")  # fmt: skip
    json_option(cmp)
    cmp.set_defaults(handler=compare_dirs)
    rep = sub.add_parser("report", help="one self-contained report of a results directory (offline HTML, JSON, PDF; "
                         "PNG: its first screen)")  # fmt: skip
    rep.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a results directory (ubench-results/<run>)")
    rep.add_argument(
        "--format",
        choices=["html", "json", "pdf", "png"],
        default="html",
        help="html (default), json, pdf (printed by headless Chromium), png (its first screen)",
    )
    rep.add_argument("--output", type=Path, metavar="FILE", help="default: RUN_DIR/report.<format>")
    rep.set_defaults(handler=report)
    rec = sub.add_parser("records", help="a run's per-request records in another format (JSON Lines, CSV, Parquet)")
    rec.add_argument("run_dir", type=Path, metavar="RUN", help="a results directory, or one case's directory in it")
    rec.add_argument("--format", choices=list(EXPORTS), required=True,
                     help="jsonl (an object per request), csv, parquet (what runs write: docs/records.md)")  # fmt: skip
    rec.add_argument("--output", type=Path, metavar="DIR", help="where to write <case>.<format> (default: beside "
                     "each case's records, as records.<format>)")  # fmt: skip
    rec.set_defaults(handler=convert_records)


def report(args: argparse.Namespace) -> int:
    target = args.output or args.run_dir / f"report.{args.format}"
    try:
        if args.format == "json":
            cases = [c.result for c in ResultsDir(args.run_dir).cases()]
            if not cases:
                raise FileNotFoundError(f"no case results (*/{RESULTS}) under {args.run_dir}")
            write_json(target, {"run": str(args.run_dir), "cases": cases})
        else:
            page(target, args.format, standalone.render(args.run_dir))
    except FileNotFoundError as exc:
        err(str(exc))
        return EXIT_USAGE
    except OSError as exc:
        err(f"cannot write {target}: {exc.strerror or exc}")
        return EXIT_RESULTS
    except RuntimeError as exc:
        err(str(exc))
        return EXIT_RESULTS
    print(target)
    return EXIT_OK


def compare_dirs(args: argparse.Namespace) -> int:
    base = {d.name: d for d in baselines.case_dirs(args.baseline)}
    cur = {d.name: d for d in ResultsDir(args.current).case_dirs()}
    if not base or not cur:
        err(f"no case results (*/{RESULTS}) under {args.baseline if not base else args.current}")
        return EXIT_USAGE
    rules = Regression(min_change=args.min_change, alpha=args.alpha)
    regressed = False
    cases: list[dict[str, Any]] = []
    for case_id in sorted(base.keys() | cur.keys()):
        if case_id not in base or case_id not in cur:
            only = str(args.current if case_id in cur else args.baseline)
            cases.append({"case": case_id, "only_in": only})
            if not args.json:
                print(f"{case_id}: only in {only}\n")
            continue
        comparisons, refused = baselines.compare_dirs(base[case_id], cur[case_id], rules.thresholds(), rules.alpha,
                                                      rules.floors())  # fmt: skip
        case_regressed = bool(compare.regressions(comparisons)) and refused is None
        regressed |= case_regressed
        cases.append({"case": case_id, "regressed": case_regressed, "note": refused,
                      "comparisons": [c.as_dict() for c in comparisons]})  # fmt: skip
        if not args.json:
            print(f"{case_id}\n{compare.table(comparisons)}" + (f"\n{refused}" if refused else "") + "\n")
    if args.json:
        print(json.dumps({"regressed": regressed, "cases": cases}, indent=2))
    return EXIT_SLO if regressed else EXIT_OK


EXPORTS = {"jsonl": record_files.write_jsonl, "csv": record_files.write_csv, "parquet": record_files.write_parquet}


def convert_records(args: argparse.Namespace) -> int:
    """Each case's records (Parquet; JSON Lines of runs written before it; a killed run's blocks) in the
    format asked for."""
    root: Path = args.run_dir
    cases = [root] if record_files.has_records(root) else []
    if not cases and root.is_dir():
        cases = sorted(d for d in root.iterdir() if d.is_dir() and record_files.has_records(d))
    if not cases:
        err(f"no records ({record_files.PARQUET}, {record_files.JSONL} or {record_files.PARTS}/) under {root}")
        return EXIT_USAGE
    for case_dir in cases:
        name = f"{case_dir.name}.{args.format}" if args.output else f"records.{args.format}"
        target = (args.output or case_dir) / name
        if target.exists() and target.resolve() == (case_dir / record_files.PARQUET).resolve():
            print(f"{target} (already Parquet)")
            continue
        try:
            records = record_files.read_case(case_dir)
            EXPORTS[args.format](target, records)
        except record_files.RecordsError as exc:
            err(f"{case_dir.name}: {exc}")
            return EXIT_USAGE
        except OSError as exc:
            err(f"cannot write {target}: {exc.strerror or exc}")
            return EXIT_RESULTS
        print(f"{target}: {len(records)} requests")
    return EXIT_OK
