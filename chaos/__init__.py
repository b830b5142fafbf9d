"""Chaos and fuzz harness for agentstream (not part of ``make test``; run ``make chaos``).

- ``python -m chaos run``: fault scenarios under load, each on a fresh stack, checked by the
  history checker (:mod:`chaos.history`); prints a table, exit code 1 when a scenario loses,
  duplicates, reorders or answers wrongly.
- ``python -m chaos fuzz --cases N``: bad input through the codec, the validation stage and the
  dead-letter header parser (:mod:`chaos.fuzz`).

See docs/reliability.md.
"""
