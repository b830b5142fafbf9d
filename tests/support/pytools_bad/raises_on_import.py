"""A module whose import fails (the loader must refuse it in one line)."""

raise RuntimeError("missing API_TOKEN for the CRM client")
