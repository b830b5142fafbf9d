"""LLM clients: the ``LLMClient`` interface, providers and wrappers."""
