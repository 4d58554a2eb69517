"""Serving on machines without vLLM (the local runner's CPU stand-in)."""
