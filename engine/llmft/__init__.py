"""llmft: the fine-tuning suite's one Python package and its `llmft` command."""

__version__ = "0.1.0"
