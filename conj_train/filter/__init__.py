"""Stage 2: filtering. Parse each sampled judgment, compare its verdict with the label, build the
contrastive pairs:

    run      the stage: reads the sample folder, writes the DPO dataset (``run_filter``, ``FilterConfig``)
    rules    the pair rules (``PairRules``, ``LengthRule``) and judgment classification
    pairs    pair building, label balancing, train/validation splits
    swap     swapped-order copies of the pairs
    report   the report (JSON, Markdown, PNG)
    hub      the pair dataset on the Hub, with its card

Nothing is imported here: the CLI must stay light.
"""
