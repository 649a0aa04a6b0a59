"""The one feature code of the platform: feature specs, the encoder, and entity-candidate matches.

Shared by the dataset builders, the two-tower towers, the content-based cold start, the ranker and
serving's ``match_reasons``, so training and serving can never disagree on a vocabulary or a
feature definition.

- :mod:`~startup_recs.features.specs`: :class:`FeatureSpec` names a kind's columns by type
  (categorical, multi-valued, numeric); :data:`SPECS` holds the app database's kinds,
  :func:`infer_spec` reads an imported table.
- :mod:`~startup_recs.features.encoders`: :class:`FeatureEncoder` / :class:`PairEncoder`, fitted
  on the train window only; index 0 = unknown; saved as JSON, never pickle.
- :mod:`~startup_recs.features.match`: :func:`match_features` (float32 [n_candidates, k], vectorised
  over hundreds of candidates per request) and :func:`match_reasons` (short strings from the same
  terms); :func:`token_column_pairs` names the fields those terms compare token by token.
- :mod:`~startup_recs.features.values`: the cell-level helpers they share.
"""

from __future__ import annotations

from startup_recs.features.encoders import (
    FORMAT,
    MAX_MULTI_LEN,
    FeatureEncoder,
    PairEncoder,
    as_indexed,
    encode_side,
    load_encoders,
    save_encoders,
)
from startup_recs.features.match import (
    CHECK_FIT,
    TERMS,
    match_features,
    match_reasons,
    match_reasons_batch,
    token_column_pairs,
)
from startup_recs.features.specs import LOG1P_FROM, NO_FEATURES, SPECS, FeatureSpec, infer_spec, spec_for

__all__ = [
    "CHECK_FIT", "FORMAT", "LOG1P_FROM", "MAX_MULTI_LEN", "NO_FEATURES", "SPECS", "TERMS", "FeatureEncoder",
    "FeatureSpec", "PairEncoder", "as_indexed", "encode_side", "infer_spec", "load_encoders", "match_features",
    "match_reasons", "match_reasons_batch", "save_encoders", "spec_for", "token_column_pairs",
]
