"""Stage 4: evaluation. Judge held-out preference sets in both answer orders with one or more models
(generative judges and scalar reward models) and score them:

    run                  the stage: models x data sets, shards, resume, metrics (``run_eval``)
    config               its recipe keys (``EvalConfig``) and model/data-set name parsing
    records              what one model writes per pair and order
    scoring              re-scoring stored records into metrics
    metrics              metric math (no files, no models)
    official_metrics     each benchmark's official metric
    benchmarks           benchmark protocols (splits, names, per-benchmark rules)
    rewardbench_results  RewardBench's own result files
    report               metrics.json, summary.md, the official benchmark headlines

Nothing is imported here: the modules import the engines, and the CLI must stay light.
"""
