"""`edgeloop feed`: a CSV's rows as the JSON lines `edgeloop-agent` reads on stdin.

Columns are picked by the model's feature names, so a sensor log with a
timestamp or columns in another order feeds the agent the right features.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from edgeloop.cli.errors import CliError
from edgeloop.cli.tables import read_table


def _feed(args: argparse.Namespace) -> int:
    from edgeloop.factory.config import load_config

    config = load_config(args.config)
    m = config.model
    table = read_table(
        args.data,
        m.n_features,
        m.feature_names,
        args.label_column or m.label_column,
        label_required=args.label_column is not None,
    )
    out = sys.stdout
    try:
        for i, row in enumerate(table.X):
            # The shortest decimal that reads back as the same float32 (17.99, not
            # 17.989999771118164): the agent reads float32, and the pipe stays short.
            doc: dict[str, Any] = {"x": [float(str(v)) for v in row]}
            if table.labels is not None and config.is_classifier:
                try:
                    doc["y"] = int(float(table.labels[i]))
                except ValueError as exc:
                    raise CliError(
                        f"{args.data}:{table.lines[i]}: label {table.labels[i]!r} is not a whole "
                        "number",
                        "string_labels",
                    ) from exc
            out.write(json.dumps(doc) + "\n")
        out.flush()
    except BrokenPipeError:
        # The agent stopped reading; that ends the feed, it is not an error.
        # Point stdout at /dev/null so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "feed",
        help="print a CSV's rows as JSON lines for `edgeloop-agent` (source kind stdin)",
        description="Columns are matched by the model config's feature names (extra columns, "
        "such as a timestamp, are ignored); a classifier's label column goes along as y.",
    )
    p.add_argument("data", help=".csv with a header line (or .npz with X and y)")
    p.add_argument("--config", required=True, help="the model config (TOML)")
    p.add_argument(
        "--label-column",
        default=None,
        help="override the label column (default: the config's label_column)",
    )
    p.set_defaults(run=_feed)
