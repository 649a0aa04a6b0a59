"""Offline evaluation: the protocol (:mod:`~startup_recs.evaluation.protocol`), the one metrics
module (:mod:`~startup_recs.evaluation.metrics`), the routing choice on validation
(:mod:`~startup_recs.evaluation.routing`) and the human report (:mod:`~startup_recs.evaluation.report`)."""
