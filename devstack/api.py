"""`chalice local --no-autoreload` for the local stack, with the supervisor's environment winning.

Chalice's ``local`` command copies the stage's ``environment_variables`` from .chalice/config.json
over ``os.environ`` before importing app.py. The `run` supervisor has already applied them, plus the
local overrides (AWS_ENDPOINT_URL, ALLOW_LOOPBACK_URLS, a generated WEBHOOK_SECRET, WORK_DIR, ...)
that must reach the API and the worker alike; so here the config only fills in what is unset.
Everything else is Chalice's own code path: CLIFactory -> config -> app -> LocalDevServer.

Run by ``devstack.stack`` as ``python -m devstack.api --port N --port-file F``.
"""
from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import sys
import threading
from collections.abc import MutableMapping
from pathlib import Path

from chalicelib.config import PROJECT_ROOT
from devstack.procs import die_with_parent


class _ParentEnvWins(MutableMapping):
    """``os.environ`` where assignments only fill in missing keys."""

    def __getitem__(self, key):
        return os.environ[key]

    def __setitem__(self, key, value):
        os.environ.setdefault(key, value)

    def __delitem__(self, key):
        del os.environ[key]

    def __iter__(self):
        return iter(os.environ)

    def __len__(self):
        return len(os.environ)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.api")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--stage", default="dev")
    parser.add_argument("--project-dir", default=str(PROJECT_ROOT))
    parser.add_argument("--port-file", help="written with the bound port once the socket listens")
    args = parser.parse_args(argv)
    die_with_parent()

    from chalice.cli import validate_routes
    from chalice.cli.factory import CLIFactory
    from chalice.local import ChaliceRequestHandler, ForbiddenError, create_local_server

    verbose = bool(os.environ.get("LOCAL_RUN_VERBOSE"))
    handled = threading.local()

    class LoggingHandler(ChaliceRequestHandler):
        # app.py logs one line per request it handles; requests Chalice answers before reaching a
        # view (403 no such route, 405, 415) would leave no trace, so those get the HTTP line here.
        def parse_request(self):
            handled.app_logged = False
            return super().parse_request()

        def _send_error_response(self, error):
            # API Gateway's 403 "Missing Authentication Token" for a path no route matches: here a
            # 404 in the service's error shape (deployed, the gateway answers before Lambda runs).
            if isinstance(error, ForbiddenError) and b"Missing Authentication Token" in (error.body or b""):
                routes = ", ".join(f"{m} {r}" for r, methods in sorted(app_obj.routes.items()) for m in methods)
                body = json.dumps({"error": {"code": "not_found", "field": "path",
                                             "message": f"no route {self.command} {self.path.split('?')[0]}; "
                                                        f"routes: {routes}"}}).encode()
                self._send_http_response(404, {**error.headers, "Content-Type": "application/json"}, body)
                return
            super()._send_error_response(error)

        def log_message(self, format, *fmt_args):  # noqa: A002 - BaseHTTPRequestHandler's name
            if verbose or not getattr(handled, "app_logged", False):
                print(f"api    | {self.address_string()} {format % fmt_args}", flush=True)

    # Same as `chalice local`: the app's logger (app.log) prints to stdout as on Lambda.
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
    logging.getLogger("botocore").setLevel(logging.WARNING)  # "Found credentials..." on every client
    os.environ["AWS_CHALICE_CLI_MODE"] = "true"
    factory = CLIFactory(args.project_dir, environ=_ParentEnvWins())
    config = factory.create_config_obj(chalice_stage_name=args.stage)
    app_obj = config.chalice_app

    def note_app_logged(record):
        handled.app_logged = True  # the view runs on the request's thread
        return True

    app_obj.log.addFilter(note_app_logged)
    validate_routes(app_obj.routes)
    server = create_local_server(app_obj, config, args.host, args.port)
    server.server.RequestHandlerClass = functools.partial(LoggingHandler, app_object=app_obj, config=config)
    port = server.server.server_address[1]
    if args.port_file:
        Path(args.port_file).write_text(str(port))
    print(f"api    | serving on http://{args.host}:{port}", flush=True)
    try:
        server.server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
