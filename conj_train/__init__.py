"""conj-train: train generative LLM judges from preference data with the Con-J method."""

__version__ = "0.1.0"
