"""A module with no tools in it."""


def helper() -> str:
    return "not a tool"
