"""Freeze the current contracts that no released version matches: ``make schemas-release``.

Writes ``schemas/released/<id>-<Name>.avsc`` (the self-contained schema) for each contract whose
id in the built-in catalog is provisional, after checking it is backward and forward compatible
with the record's latest released version (:mod:`agentstream.schemas.compat`). Released files
are never edited or removed: they are what released builds may have written.

    python -m agentstream.schemas.release [--check]

``--check`` writes nothing and exits 1 when a contract is unreleased or incompatible.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from agentstream.schemas.catalog import LOCAL_IDS
from agentstream.schemas.compat import check_against_released
from agentstream.schemas.loader import builtin_schemas, released_schemas

RELEASED_DIR = Path(__file__).parent / "released"


def unreleased() -> dict[int, str]:
    """Provisional id -> full name of every contract no released version matches."""
    released = released_schemas()
    return {i: name for name, i in LOCAL_IDS.items() if i not in released}


def main(argv: Sequence[str] | None = None) -> int:
    check_only = "--check" in (argv if argv is not None else sys.argv[1:])
    problems = check_against_released()
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 1
    pending = unreleased()
    for schema_id, name in sorted(pending.items()):
        short = name.rsplit(".", 1)[-1]
        target = RELEASED_DIR / f"{schema_id}-{short}.avsc"
        if check_only:
            print(f"{name} is unreleased (would be {target.name})", file=sys.stderr)
            continue
        text = json.dumps(builtin_schemas()[name].definition, indent=2) + "\n"
        target.write_text(text, encoding="utf-8")
        print(f"released {name} as schema id {schema_id}: {target}")
    return 1 if check_only and pending else 0


if __name__ == "__main__":
    sys.exit(main())
