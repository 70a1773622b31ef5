"""Start and stop the embedded defaults (MLflow, Prefect, nx-27017, MLServer) as local processes.

Used by `telescore up` and by the test fixtures alike, so tests run what users run.
"""
