"""`edgeloop dashboard`, and the one `edgeloop local up` serves: the fleet in a browser.

Read-only, on loopback. Every request reads the tables the way `edgeloop local status`
does (`edgeloop.cli.fleet.fleet_overview`): devices with their presence, each model's
champion, versions, training runs, and its rollout's progress by stage.

The page is rendered here and only here, with every value escaped (thing names, reasons
and details come from devices and from the cloud's own logs): its small inline script
fetches the same rendering of the fleet (`/fleet.html`) every few seconds and swaps it
in, so no second renderer in JavaScript has to escape the same values again.
`/api/fleet` serves the document it is rendered from, for scripts. The page's
Content-Security-Policy allows only that one script, so even a value that escaped
escaping could not run.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import html
import json
import signal
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from edgeloop.cli.dashboard_chart import gate_chart
from edgeloop.cli.errors import EXIT_INTERRUPTED, CliError
from edgeloop.cli.fleet import _presence_table, add_presence_table_option, fleet_overview
from edgeloop.cli.stack import FLEET_TABLE, REGISTRY_TABLE, STACK_ENV, resolve, stack_name

DEFAULT_PORT = 8765
REFRESH_SECONDS = 3
# A deployed fleet may have many thousands of devices; the page shows the first ones
# and says how many it left out (`edgeloop fleet --json` lists them all).
MAX_DEVICE_ROWS = 200

Reader = Callable[[], dict[str, Any]]

# What a page may show of a local cloud's state file: never its credentials.
LOCAL_FIELDS = ("pid", "started_at", "broker_url", "cdn_base_url", "identity_enforced")
HEALTH_CLASSES = {"healthy": "ok", "degraded": "warn", "failed": "bad", "no_model": "dim"}
DECISION_CLASSES = {"promoted": "ok", "failed": "bad", "training_elsewhere": "run"}
STATE_CLASSES = {
    "passed": "ok",
    "complete": "ok",
    "rolling": "run",
    "paused": "warn",
    "stalled": "warn",
    "aborted": "bad",
    "waiting": "dim",
}

SCRIPT = f"""
(function () {{
  var fleet = document.getElementById("fleet");
  var note = document.getElementById("note");
  function refresh() {{
    fetch("fleet.html", {{cache: "no-store"}})
      .then(function (r) {{
        if (!r.ok) {{ throw new Error("HTTP " + r.status); }}
        return r.text();
      }})
      .then(function (text) {{
        fleet.innerHTML = text;
        note.textContent = "";
        fleet.setAttribute("data-refreshed", String(Date.now()));
      }})
      .catch(function (e) {{ note.textContent = "cannot refresh: " + e.message; }});
  }}
  setInterval(refresh, {REFRESH_SECONDS * 1000});
}})();
"""
_SCRIPT_HASH = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
# Styles are inline (no build step, no second request); scripts only the one above.
CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; "
    f"script-src 'sha256-{_SCRIPT_HASH}'; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; background: #fafafa; }
h1 { font-size: 1.4em; margin: 0 0 .2em; } h2 { margin: 1.4em 0 .3em; }
h3 { font-size: 1em; margin: 1em 0 .3em; color: #444; }
.sub, .dim { color: #777; } #note { color: #b00; }
table { border-collapse: collapse; background: #fff; margin-bottom: .5em; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.ok { color: #17803d; } .warn { color: #b36b00; } .bad { color: #c01c28; font-weight: 600; }
.run { color: #1c5fc0; font-weight: 600; }
.error { background: #fde8e8; border: 1px solid #c01c28; padding: .6em; }
section.model { border-top: 2px solid #ccc; margin-top: 1.5em; }
progress { width: 10em; }
.chart svg { max-width: 100%; height: auto; }
"""


def e(value: Any) -> str:
    """A value as safe HTML text: `-` for nothing, everything else escaped."""
    return "-" if value is None else html.escape(str(value), quote=True)


def _table(columns: tuple[str, ...], rows: list[list[str]], empty: str) -> str:
    """Rows of cells already rendered as HTML; `empty` (plain text) when there are none."""
    if not rows:
        return f'<p class="dim">{e(empty)}</p>'
    head = "".join(f"<th>{e(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _td(value: Any, css: str | None = None) -> str:
    return f'<td class="{css}">{e(value)}</td>' if css else f"<td>{e(value)}</td>"


def _metric_name(runs: list[dict[str, Any]]) -> str:
    """The gate's metric, as the runs recorded it (the config is not at hand here)."""
    for run in runs:
        for name in ("silhouette", "accuracy", "f1_macro"):
            if name in (run.get("metrics") or {}):
                return name
    return "gate figure"


def _figure(value: Any) -> str | None:
    """A gate figure to four places; anything else as it is."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:.4f}"
    return None if value is None else str(value)


def _version(value: Any) -> str:
    return "-" if value in (None, "", 0) else f"v{value}"


def public_doc(doc: dict[str, Any], source: str) -> dict[str, Any]:
    """What the dashboard serves of a status document: the models, where they were read
    from, and of a local cloud only what is not a secret."""
    local = doc.get("local_cloud")
    return {
        "source": source,
        "read_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "local_cloud": None if local is None else {k: local.get(k) for k in LOCAL_FIELDS},
        "models": doc["models"],
    }


def render_fleet(doc: dict[str, Any]) -> str:
    """The fleet as an HTML fragment: a summary of the models, then each model's rollout,
    devices, versions and runs. Every value goes through `e`."""
    models: dict[str, dict[str, Any]] = doc["models"]
    parts = [f'<p class="sub">{e(doc["source"])}; read at {e(doc["read_at"])}</p>']
    summary = []
    for name, m in models.items():
        rollout = m.get("rollout")
        connected = sum(1 for d in m["devices"] if d.get("presence") == "connected")
        summary.append(
            [
                _td(name),
                _td(_version(m.get("champion"))),
                _td(
                    "-"
                    if not rollout
                    else f"v{rollout['version']} {rollout['state']} "
                    f"at stage {rollout.get('stage')}",
                    STATE_CLASSES.get(str(rollout["state"])) if rollout else None,
                ),
                f'<td class="num">{len(m["devices"])}</td>',
                f'<td class="num">{connected}</td>',
            ]
        )
    parts.append("<h2>Models</h2>")
    parts.append(
        _table(
            ("model", "champion", "rollout", "devices", "connected"),
            summary,
            "no model configured",
        )
    )
    for name, m in models.items():
        parts.append(_model_section(name, m))
    return "\n".join(parts)


def _model_section(name: str, m: dict[str, Any]) -> str:
    champion = _version(m.get("champion"))
    parts = [
        f'<section class="model"><h2>{e(name)} <span class="sub">champion {e(champion)}</span></h2>'
    ]
    parts.append(_rollout(m.get("rollout"), m.get("progress", [])))
    devices = m["devices"]
    rows = [
        [
            _td(d.get("thing")),
            _td(d.get("model")),
            _td(d.get("stage")),
            _td(_version(d.get("version"))),
            _td(d.get("health"), HEALTH_CLASSES.get(str(d.get("health")))),
            _td(d.get("step")),
            _td(
                d.get("presence") or "unknown",
                {"connected": "ok", "offline": "bad"}.get(str(d.get("presence")), "dim"),
            ),
            _td(d.get("since")),
            _td(d.get("last_report") or d.get("last_seen")),
        ]
        for d in devices[:MAX_DEVICE_ROWS]
    ]
    parts.append("<h3>Devices</h3>")
    parts.append(
        _table(
            (
                "thing",
                "model",
                "stage",
                "version",
                "health",
                "step",
                "presence",
                "since",
                "last report",
            ),
            rows,
            "no device has reported yet",
        )
    )
    if len(devices) > MAX_DEVICE_ROWS:
        parts.append(
            f'<p class="dim">{len(devices) - MAX_DEVICE_ROWS} more devices: '
            f"edgeloop fleet --model {e(name)} --json lists them all</p>"
        )
    versions = [
        [
            _td(_version(v.get("version"))),
            f'<td class="num">{e(v.get("size"))}</td>',
            f'<td class="num">{e(v.get("compressed_full_size"))}</td>',
            _td(
                ", ".join(
                    f"from v{d.get('from_version')} {d.get('size')} B" for d in v.get("deltas", [])
                )
                or "-"
            ),
        ]
        for v in m.get("versions", [])
    ]
    parts.append("<h3>Versions</h3>")
    parts.append(
        _table(("version", "bytes", "compressed", "patches"), versions, "none published yet")
    )
    runs = [
        [
            _td(r.get("at")),
            _td(r.get("decision"), DECISION_CLASSES.get(str(r.get("decision")))),
            f'<td class="num">{e(_figure(r.get("judged")))}</td>',
            f'<td class="num">{e(r.get("rows"))}</td>',
            _td(_version(r.get("version"))),
            _td(r.get("reason", "")),
        ]
        for r in m.get("runs", [])
    ]
    parts.append("<h3>Training runs (newest first)</h3>")
    chart = gate_chart(m.get("runs", []), _metric_name(m.get("runs", [])))
    if chart:
        parts.append(f'<div class="chart">{chart}</div>')
    parts.append(
        _table(
            ("at", "decision", "gate figure", "rows", "version", "reason"),
            runs,
            "none yet: runs start when devices upload data",
        )
    )
    parts.append("</section>")
    return "\n".join(parts)


def _rollout(rollout: dict[str, Any] | None, progress: list[dict[str, Any]]) -> str:
    if not rollout:
        return '<p class="dim">no rollout yet: one starts when a version ships</p>'
    state = str(rollout["state"])
    head = (
        f"<h3>Rollout of v{e(rollout['version'])}: "
        f'<span class="{STATE_CLASSES.get(state, "dim")}">{e(state)}</span> '
        f"at stage {e(rollout.get('stage'))}"
        f'<span class="sub"> (since {e(rollout.get("started_at"))}; previous '
        f"{e(_version(rollout.get('previous')))})</span></h3>"
    )
    reason = f"<p>why: {e(rollout['reason'])}</p>" if rollout.get("reason") else ""
    rows = []
    for p in progress:
        needed = p.get("needed")
        installed = int(p.get("installed", 0))
        bar = (
            f'<progress max="{int(needed)}" value="{min(installed, int(needed))}"></progress> '
            if needed
            else ""
        )
        failed = int(p.get("failed", 0))
        rows.append(
            [
                _td(p.get("name")),
                _td(p.get("status"), STATE_CLASSES.get(str(p.get("status")), "dim")),
                f"<td>{bar}{installed}" + (f" (needs {int(needed)})" if needed else "") + "</td>",
                f'<td class="num{" bad" if failed else ""}">{failed}</td>',
            ]
        )
    return head + reason + _table(("stage", "status", "installed", "failed"), rows, "no stages")


def render_page(fleet: str) -> str:
    """The whole page around a rendered fleet (or an error, already escaped)."""
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>edgeloop fleet</title>"
        f"<style>{STYLE}</style></head><body>"
        "<h1>edgeloop fleet</h1>"
        f'<p class="sub">read-only; refreshes every {REFRESH_SECONDS} s '
        '<span id="note"></span></p>'
        f'<main id="fleet">{fleet}</main>'
        f"<script>{SCRIPT}</script></body></html>\n"
    )


def render_error(message: str) -> str:
    return f'<p class="error">cannot read the fleet: {e(message)}</p>'


class Dashboard:
    """The dashboard's HTTP server on 127.0.0.1, in a daemon thread, until `stop`.

    `read` is called for every request: each page and poll shows the tables as they are.
    """

    def __init__(self, read: Reader, source: str, port: int = DEFAULT_PORT) -> None:
        self.read = read
        self.source = source
        handler = type("Handler", (_Handler,), {"dashboard": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}/"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="dashboard", daemon=True
        )
        self._thread.start()

    def doc(self) -> dict[str, Any]:
        return public_doc(self.read(), self.source)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class _Handler(BaseHTTPRequestHandler):
    dashboard: Dashboard
    server_version = "edgeloop-dashboard"

    def do_GET(self) -> None:
        # Only names of this loopback server: a page elsewhere that rebinds its own
        # domain to 127.0.0.1 must not read the fleet through the victim's browser.
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0]
        if host not in ("127.0.0.1", "localhost", "[::1]"):
            self._send(421, "text/plain", b"misdirected request: use 127.0.0.1")
            return
        path = self.path.split("?", 1)[0]
        if path not in ("/", "/fleet.html", "/api/fleet"):
            self._send(404, "text/plain", b"not found: / /fleet.html /api/fleet")
            return
        try:
            doc = self.dashboard.doc()
        except Exception as exc:
            # A hiccup reading the tables, or the local cloud gone: said on the page,
            # which keeps polling, never a dead server.
            message = exc.message if isinstance(exc, CliError) else f"{type(exc).__name__}: {exc}"
            if path == "/api/fleet":
                body = json.dumps({"error": message}).encode()
                self._send(503, "application/json", body)
            else:
                fragment = render_error(message)
                self._send(503, "text/html; charset=utf-8", self._html(path, fragment))
            return
        if path == "/api/fleet":
            self._send(200, "application/json", json.dumps(doc, default=str).encode())
        else:
            self._send(200, "text/html; charset=utf-8", self._html(path, render_fleet(doc)))

    @staticmethod
    def _html(path: str, fragment: str) -> bytes:
        return (fragment if path == "/fleet.html" else render_page(fragment)).encode()

    def _send(self, code: int, content_type: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        # A poll every few seconds would bury `local up`'s log of runs and rollouts.
        return


def start(
    read: Reader, source: str, port: int, option: str = "--dashboard-port"
) -> Dashboard | None:
    """The dashboard on `port`, or None when it is 0; a port already taken is said on
    stderr (naming the caller's `option`) and the caller runs on without a dashboard."""
    if port == 0:
        return None
    try:
        return Dashboard(read, source, port)
    except OSError as exc:
        print(
            f"warning: no dashboard: cannot listen on 127.0.0.1:{port} ({exc.strerror}); "
            f"pass {option} N",
            file=sys.stderr,
            flush=True,
        )
        return None


def add_port_option(parser: argparse.ArgumentParser, *, zero_disables: bool) -> None:
    parser.add_argument(
        "--dashboard-port" if zero_disables else "--port",
        type=int,
        default=DEFAULT_PORT,
        metavar="PORT",
        help="serve the read-only fleet dashboard on 127.0.0.1:PORT"
        + (" (0: none)" if zero_disables else "")
        + " (default: %(default)s)",
    )


def _reader(args: argparse.Namespace) -> tuple[Reader, str]:
    if args.local is not None:
        from edgeloop.cli.local import local_status, read_state

        directory = Path(args.local).resolve()
        # The state file is read at each request: a local cloud started again (new
        # ports, new credentials) shows without restarting the dashboard.
        return lambda: local_status(read_state(directory)), f"local cloud in {directory}"
    import boto3

    from edgeloop.cli.aws import aws_errors

    if not args.model:
        raise CliError(
            "which models? pass --local DIR for a local cloud, or --model NAME (repeatable) "
            "with --stack NAME or the table names",
            "usage",
        )
    registry = resolve(
        args,
        option="table",
        output=REGISTRY_TABLE,
        env="EDGELOOP_REGISTRY_TABLE",
        what="registry table",
    )
    fleet = resolve(
        args,
        option="fleet-table",
        output=FLEET_TABLE,
        env="EDGELOOP_FLEET_TABLE",
        what="fleet table",
    )
    presence = _presence_table(args)
    dynamodb = boto3.client("dynamodb", endpoint_url=args.endpoint_url)

    def read() -> dict[str, Any]:
        with aws_errors(f"registry table {registry}"):
            return {"models": fleet_overview(dynamodb, registry, fleet, presence, args.model)}

    stack = stack_name(args)
    return read, f"stack {stack}" if stack else f"tables {registry}, {fleet}"


def _run(args: argparse.Namespace) -> int:
    read, source = _reader(args)
    received: list[int] = []
    stopping = threading.Event()

    def stop(signum: int, _: object) -> None:
        received.append(signum)
        stopping.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    try:
        dashboard: Dashboard | None = Dashboard(read, source, args.port)
    except OSError as exc:
        raise CliError(
            f"no dashboard: cannot listen on 127.0.0.1:{args.port} ({exc.strerror}); pass --port N",
            "usage",
        ) from exc
    assert dashboard is not None
    print(f"dashboard of the {source}: {dashboard.url} (Ctrl-C stops it)", flush=True)
    while not stopping.wait(1.0):
        pass
    dashboard.stop()
    return EXIT_INTERRUPTED if signal.SIGINT in received else 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "dashboard",
        help="a read-only web page of the fleet: devices, models, versions, runs, rollouts",
        description="Serves on 127.0.0.1 what `edgeloop local status` and `edgeloop fleet` "
        "print, refreshed every few seconds, for a running local cloud (--local DIR; "
        "`edgeloop local up` serves one itself) or a deployed stack (--stack NAME --model M).",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--local", metavar="DIR", default=None, help="the --out directory of `local up`"
    )
    where.add_argument(
        "--stack",
        default=None,
        help=f"a deployed stack: the table names are its outputs (default: ${STACK_ENV})",
    )
    p.add_argument(
        "--model",
        action="append",
        default=[],
        help="without --local: a model to show (repeatable; a stack keeps no list of them)",
    )
    p.add_argument(
        "--table",
        default=None,
        help="registry table name (default: the stack's RegistryTable output, else "
        "$EDGELOOP_REGISTRY_TABLE)",
    )
    p.add_argument(
        "--fleet-table",
        default=None,
        help="fleet table name (default: the stack's FleetTable output, else "
        "$EDGELOOP_FLEET_TABLE)",
    )
    add_presence_table_option(p)
    p.add_argument(
        "--endpoint-url",
        default=None,
        help="AWS endpoint to use instead of AWS's own",
    )
    add_port_option(p, zero_disables=False)
    p.set_defaults(run=_run)
