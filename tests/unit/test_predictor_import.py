"""Import hygiene of the serving layers: the core never imports kserve, and importing the predictor
package is immune to another program's command-line flags (kserve parses sys.argv on import)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_core_serving_and_cli_do_not_import_kserve():
    r = _run("import sys, startup_recs.cli, startup_recs.serving.api, startup_recs.serving.reload\n"
             "startup_recs.cli.build_parser().parse_args(['serve', '--bundle', 'x'])\n"
             "assert not [m for m in sys.modules if m.split('.')[0] in ('kserve', 'predictors')], 'kserve imported'\n"
             "print('clean')")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "clean"


def test_foreign_argv_does_not_leak_into_kserve():
    # flags kserve knows, with values that would make its parser exit (int) or change behaviour
    r = _run("import sys\n"
             "sys.argv = ['pytest', '--http_port', 'not-a-port', '--workers', '7', '--model_name', 'leak', '-q']\n"
             "import predictors, kserve.model_server as k\n"
             "assert sys.argv[1] == '--http_port'\n"
             "print(k.args.http_port, k.args.workers, k.args.model_name)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "8080 1 model"
