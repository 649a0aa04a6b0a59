"""Feature specs: which columns of a kind's feature table are categorical, multi-valued or numeric.

What: :class:`FeatureSpec` (column names by type; ``log1p`` names the numeric columns
transformed before standardising), :data:`SPECS` for the app database's kinds (``startup``,
``developer``, ``investor``), :func:`infer_spec` for an imported table and :func:`spec_for`
(the app spec when the table has its columns, else inferred).

Units: numeric columns are raw numbers (USD for money, years for experience); money spans orders
of magnitude, hence ``log1p``; an inferred non-negative column reaching :data:`LOG1P_FROM` is
log1p'd too.

Why one place: datasets, the two-tower towers, content cold start, the ranker and serving all
read a spec from here (or from the JSON a model saved), so they never disagree on a column.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from startup_recs.features.values import _is_listlike

LOG1P_FROM = 1000.0  # an inferred non-negative numeric column reaching this is log1p'd


@dataclass(frozen=True)
class FeatureSpec:
    """Which columns of a feature table are categorical, multi-valued or numeric.

    ``log1p`` lists the numeric columns transformed by ``log1p`` before standardising
    (money amounts span orders of magnitude).
    """

    kind: str
    categorical: tuple[str, ...] = ()
    multi: tuple[str, ...] = ()
    numeric: tuple[str, ...] = ()
    log1p: tuple[str, ...] = ()

    @property
    def columns(self) -> list[str]:
        return [*self.categorical, *self.multi, *self.numeric]

    @property
    def empty(self) -> bool:
        return not self.columns

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "categorical": list(self.categorical), "multi": list(self.multi),
                "numeric": list(self.numeric), "log1p": list(self.log1p)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureSpec:
        return cls(kind=d["kind"], categorical=tuple(d.get("categorical", ())), multi=tuple(d.get("multi", ())),
                   numeric=tuple(d.get("numeric", ())), log1p=tuple(d.get("log1p", ())))


SPECS: dict[str, FeatureSpec] = {
    "startup": FeatureSpec("startup", categorical=("sector", "stage", "location"), multi=("skills_needed",),
                           numeric=("funding_usd",), log1p=("funding_usd",)),
    "developer": FeatureSpec("developer", categorical=("location",), multi=("skills",),
                             numeric=("experience_years",)),
    "investor": FeatureSpec("investor", categorical=("location",), multi=("sectors", "stages"),
                            numeric=("check_size_usd",), log1p=("check_size_usd",)),
}
NO_FEATURES = FeatureSpec("none")


def infer_spec(df: pd.DataFrame | None, kind: str = "imported") -> FeatureSpec:
    """Spec of an imported feature table: lists -> multi, numbers -> numeric, strings -> categorical.

    Strings holding ``|`` (a list written to CSV) are multi-valued. Non-negative numbers reaching
    :data:`LOG1P_FROM` (amounts, counts: heavy right tails) are log1p'd. Timestamps and all-null columns are skipped.
    """
    if df is None:
        return NO_FEATURES
    cat, multi, num, log = [], [], [], []
    for col in df.columns:
        s = df[col]
        nonnull = s.dropna()
        if not len(nonnull):
            continue
        if pd.api.types.is_bool_dtype(s):
            cat.append(col)
        elif pd.api.types.is_numeric_dtype(s):
            num.append(col)
            lo, hi = float(nonnull.min()), float(nonnull.max())
            if lo >= 0 and hi >= LOG1P_FROM:
                log.append(col)
        elif pd.api.types.is_datetime64_any_dtype(s):
            continue
        elif _is_listlike(nonnull.iloc[0]) or nonnull.astype(str).str.contains("|", regex=False).any():
            multi.append(col)
        else:
            cat.append(col)
    return FeatureSpec(kind, tuple(cat), tuple(multi), tuple(num), tuple(log))


def spec_for(df: pd.DataFrame | None, kind: str) -> FeatureSpec:
    """The app database spec of ``kind`` when ``df`` has its columns, else one inferred from ``df``
    (kind ``"imported"``)."""
    if df is None:
        return NO_FEATURES
    known = SPECS.get(kind)
    if known is not None and set(known.columns) <= set(df.columns):
        return known
    return infer_spec(df, "imported")

