"""The models the project builds for its tests, demos and studies.

    tiny  a random tiny Qwen2 (``conj tiny-model``): the CPU test model
    real  SmolLM2-135M-Instruct from its pip package (``conj real-model``)

Nothing is imported here: the modules import torch and transformers, and the CLI must stay light.
"""
