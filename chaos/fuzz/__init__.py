"""The long fuzz run: ``python -m chaos fuzz --cases N`` (see :mod:`chaos.fuzz.targets`).

Cases are split over the targets by fixed shares; hypothesis generates them (generation only:
no shrinking, no example database). A crash or a broken rule does not stop the run: it is
counted under its own label and the first input of each is printed. Prints cases/s and the
outcomes per target; returns False when any case crashed or broke a rule.
"""

from chaos.fuzz.run import run_fuzz

__all__ = ["run_fuzz"]
