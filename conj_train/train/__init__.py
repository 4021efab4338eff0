"""Stage 3: training. ``dpo`` trains the generative judge (DPO + SFT with TRL), ``reward`` the scalar
Bradley-Terry baseline on the same pairs, ``logging`` keeps metrics on disk.

Nothing is imported here: the modules import TRL/torch, and the CLI must stay light.
"""
