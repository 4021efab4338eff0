"""Stage 3: training. ``dpo`` trains the generative judge (DPO + SFT with TRL), ``reward`` the scalar
Bradley-Terry baseline on the same pairs. Both are built from the same parts, one module each:

    args       recipe + ``--key value`` -> TRL dataclasses (+ conj-train's fields), value checks
    machine    launch and hardware: process set-up before the arguments, value adjustments
    pair_data  the filter stage's pairs -> length-checked, counted splits (judge)
    model      base model and tokenizer loading
    run_dir    the output folder's claim, checkpoints, resume point
    lifecycle  begin, train, evaluate, save, reports
    card       the model card
    logging    metrics on disk (JSONL, CSV, PNG), wandb
    prefix, prefix_trainer  the judge prompt computed once for chosen and rejected
    batches    label-balanced batch order

Nothing is imported here: the modules import TRL/torch, and the CLI must stay light.
"""
