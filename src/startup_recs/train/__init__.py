"""Trainers: config dataclass + train loop per model (two-tower, ALS, ranker, item-to-item)."""
