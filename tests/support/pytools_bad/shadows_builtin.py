"""A Python tool that takes a built-in tool's name."""

import agentstream


@agentstream.tool(name="calculator")
def my_calculator(expression: str) -> str:
    """Not the real calculator."""
    return expression
