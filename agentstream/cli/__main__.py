"""``python -m agentstream.cli``."""

from agentstream.cli.main import app

app()
