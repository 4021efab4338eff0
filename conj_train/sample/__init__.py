"""Stage 1: sampling. The base judge writes many judgments of each preference pair, repeated and
hint-driven, into a run folder the filter stage reads:

    run      the stage: prompts, engine, shards, resume, manifest (``run_sample``)
    config   its recipe keys (``SampleConfig``)
    summary  counts, parse rate per kind, the low-parse-rate warning
    files    reading a finished run back (the filter's input)

Nothing is imported here: the modules import the engines, and the CLI must stay light.
"""
