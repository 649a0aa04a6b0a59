"""KServe custom predictor over :mod:`startup_recs.serving` (one ``kserve.Model`` per use case).

Importing this package imports kserve. kserve parses ``sys.argv`` when it is first imported
(``kserve.model_server.args``), so flags of whatever program imports us (pytest, ``recs serve``)
could leak into it or make it exit; :func:`import_kserve` imports it against a clean argv, and
``python -m predictors`` parses kserve's flags itself and hands them over explicitly.
"""

from __future__ import annotations

import sys


def import_kserve() -> None:
    """Import kserve once with ``sys.argv`` reduced to the program name (see the module doc)."""
    if "kserve.model_server" in sys.modules:
        return
    saved = sys.argv
    sys.argv = saved[:1]
    try:
        import kserve.model_server  # noqa: F401
    finally:
        sys.argv = saved


import_kserve()
