"""KFP v2 pipelines over ``components/``: definition, compile, submit (kfp.Client), run-local.

Everything here imports ``kfp``; the core (``startup_recs``) does not.
"""
