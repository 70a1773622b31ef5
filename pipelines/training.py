"""Prefect flow `train-telemarketing`: ingest, validate, train, validate, register, release.

A candidate that passes the offline gate goes to a shadow or canary release (`release`).

Each task is one step of `telescore.jobs.training`, and `training.run_training` composes them:
the flow hands it these tasks in place of the plain steps, so the order is written once.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from telescore.io.context import Context
from telescore.io.params_files import load_training_params, resolve_params_file
from telescore.jobs import cold_start, serving, training
from telescore.settings import project_root

# Retries on reads only: reading the rows twice is harmless, registering twice is not.
TASKS = training.TrainingSteps(
    ingest=task(name="ingest", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)(
        training.ingest
    ),
    validate_data=task(name="validate-data", cache_policy=NO_CACHE)(training.validate_data),
    train=task(name="train", cache_policy=NO_CACHE)(training.train),
    validate_model=task(name="validate-model", cache_policy=NO_CACHE)(training.validate_model),
    register=task(name="register", cache_policy=NO_CACHE)(training.register),
    # Starting the same release again only restarts its evidence: safe to retry.
    release=task(name="release", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)(
        training.release_candidate
    ),
)


@task(name="serve-champion", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def serve_champion(ctx: Context) -> list[str]:
    """Serve the new champion here at once (every MLServer's reconciler serves it anyway)."""
    return [
        f"{each.model}: {each.previous_version} -> {each.version}"
        for each in serving.serve_new_champion(ctx)
    ]


# Results persist so that `prefect deployment run` callers can read what was decided.
@flow(name="train-telemarketing", log_prints=True, persist_result=True)
def train_telemarketing(
    params_file: str = "params.yaml",
    overrides: dict[str, Any] | None = None,
    trigger: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train, validate, register and release a telemarketing model; return what was decided.

    `trigger` says who asked and why (the monitor: its decision, window and reason); it is
    kept as tags on the run and the model version. Without the monitor's trigger and with no
    champion, a run that makes none is recorded as a cold-start attempt (`jobs.cold_start`).
    """
    logger = get_run_logger()
    root = project_root()
    with Context.from_environment() as ctx:
        path = resolve_params_file(params_file, root, ctx.state_dir)
        params = training.resolve_params(load_training_params(path), overrides)
        # Started by hand while no champion serves: a cold-start attempt the monitor's policy
        # counts, as it counts the runs it starts itself.
        with cold_start.counted_attempt(ctx, trigger) as attempt:
            result = training.run_training(
                ctx, params, root, trigger=trigger, steps=TASKS, logger=logger
            )
            model = ctx.registry.model_name
            version = result.version.version if result.version else None
            attempt.ended(result.promoted, f"registered version {version}: {result.reason}")
        logger.info("Registered %s version %s: %s", model, version, result.reason)
        if result.promoted:
            # Without a person in the loop: each MLServer's reconciler follows the champion
            # alias; this only makes the local one quicker.
            logger.info(
                "Serving: %s",
                serve_champion(ctx) or "left to the MLServer reconcilers (within seconds)",
            )
    return {
        "run_id": result.run_id,
        "model": model,
        "version": version,
        "promoted": result.promoted,
        "released": result.released,
        "release_mode": result.release_mode,
        "superseded": result.superseded,
        "reason": result.reason,
        "holdout_roc_auc": result.metrics.get("holdout_roc_auc"),
        "production_rows": result.production_rows,
    }
