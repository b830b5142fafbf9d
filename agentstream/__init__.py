"""agentstream: run AI agents as a production service on Kafka."""

__version__ = "0.2.0"
