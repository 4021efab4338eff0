"""Prompts: every prompt the pipeline shows a judge, so sampling, filtering, training and evaluation
agree on the bytes.

    templates  the judge prompt templates (built-in ``conj-zh`` / ``conj-en`` and user files)
    build      the judge and hint prompts of a data set, and slot order
    chat       chat messages and their rendering through the tokenizer's chat template

Nothing is imported here: the CLI must stay light.
"""
