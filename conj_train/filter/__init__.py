"""Stage 2: filtering. Parse each sampled judgment, compare its verdict with the label, build the
contrastive pairs (pair rules: :mod:`conj_train.pairs`, building: :mod:`conj_train.pair_building`):

    run      the stage: reads the sample folder, writes the DPO dataset (``run_filter``)
    report   the report (JSON, Markdown, PNG)

Nothing is imported here: the CLI must stay light.
"""
