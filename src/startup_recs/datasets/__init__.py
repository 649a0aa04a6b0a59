"""Dataset builders: snapshot -> training data, one module per consumer.

- :mod:`startup_recs.datasets.two_tower`: pairs with hard and random negatives + feature sidecars;
- :mod:`startup_recs.datasets.als`: the entity x candidate CSR matrix of one fit window;
- :mod:`startup_recs.datasets.ranker`: session pairs with inverse-propensity weights.

All three share the time split (:mod:`startup_recs.data.split`), the snapshot view
(:mod:`startup_recs.data.snapshot`) and :mod:`startup_recs.datasets.common`.
"""
