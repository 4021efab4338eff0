"""Inference: a trained judge or reward model at work, outside the pipeline's stages.

    judge                the embeddable judge (``Judge``): both orders, verdicts, probabilities
    probability          verdict probabilities and rationale transfer
    structured_decoding  the judgment's pattern after the prefill (opt-in at evaluation)
    reward_model         the scalar reward model as a scorer and a pairwise judge (``RewardModel``)
    judge_reward         the judge as an RL reward for TRL's ``reward_funcs`` (``JudgeReward``)
    loading              model loading for scoring (``load_model``)

``Judge``, ``RewardModel`` and ``JudgeReward`` are also importable from ``conj_train``. Nothing is
imported here: the modules import torch, and the CLI must stay light.
"""
