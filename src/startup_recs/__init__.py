"""startup_recs: the core library of the startup-marketplace recommendation platform.

Everything that does real work lives here; ``components/``, ``pipelines/`` and ``predictors/``
are thin adapters over it. This package imports neither KFP nor KServe.
"""

__version__ = "0.1.0"
