"""All stages together: one recipe through warm-up, sample, filter, train (+ the scalar reward-model
baseline) and eval, with a per-stage cache:

    run      ``conj run``: the recipe, the cache, the order of stages (``run_pipeline``)
    stages   how each stage is started (in-process, or under ``accelerate launch``)
    ablate   ``conj ablate``: one pipeline per variant recipe, one table
    demo     ``conj demo``: the embedded toy task end to end

Nothing is imported here: the CLI must stay light.
"""
