"""``python -m predictors --bundle URI [...] [kserve flags]``: the predictor image's entry point."""

import sys

from predictors.server import main
from startup_recs.core.errors import RecsError

if __name__ == "__main__":
    try:
        sys.exit(main())
    except RecsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
