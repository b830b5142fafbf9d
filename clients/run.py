"""Build the Java, Go and TypeScript clients and run each against a live pipeline.

Starts ``agentstream dev`` (embedded Tansu + Redis + every stage) once, then builds and runs each
client: it publishes an AgentRequest ("add 2 and 3", calculator allowed) and waits for its
AgentResponse by request id. A client passes when its answer is COMPLETED and its request landed
on the partition Java's murmur2 partitioner picks for the key (the partitioner agentstream
requires, docs/contract.md).

A client whose toolchain (mvn + java, go, npm + node) is missing is reported as SKIPPED with the
missing command; with ``--require-all`` (CI) a skip fails the run. Exit status: 0 when every
client that ran passed (and, with --require-all, none was skipped), else 1.

    .venv/bin/python clients/run.py [--require-all] [--only java,go,typescript]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from aiokafka.partitioner import murmur2

from agentstream.config import Settings

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
SCHEMAS = REPO / "agentstream" / "schemas" / "released"
STARTUP_TIMEOUT_S = 120.0
BUILD_TIMEOUT_S = 600.0
RUN_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Client:
    name: str
    folder: str
    tools: tuple[str, ...]
    build: tuple[tuple[str, ...], ...]
    run: tuple[str, ...]
    key: str
    """The session id the example uses as the record key."""


CLIENTS = (
    Client(
        name="java",
        folder="java",
        tools=("mvn", "java"),
        build=(("mvn", "-q", "-B", "package", "dependency:copy-dependencies", "-DskipTests"),),
        run=(
            "java",
            "-cp",
            os.pathsep.join(["target/classes", "target/dependency/*"]),
            "io.agentstream.example.AskAgent",
        ),
        key="java-example",
    ),
    Client(
        name="go",
        folder="go",
        tools=("go",),
        build=(("go", "build", "-o", "agentstream-go", "."),),
        run=("./agentstream-go",),
        key="go-example",
    ),
    Client(
        name="typescript",
        folder="typescript",
        tools=("npm", "node"),
        build=(("npm", "ci", "--no-audit", "--no-fund"), ("npm", "run", "--silent", "build")),
        run=("node", "dist/ask.js"),
        key="ts-example",
    ),
)


class DevPipeline:
    """``agentstream dev`` as a child process; ``bootstrap`` once its pipeline is running."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.log = run_dir / "dev.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> str:
        agentstream = Path(sys.executable).parent / "agentstream"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("AGENTSTREAM_KAFKA_BOOTSTRAP_SERVERS", None)  # always the embedded broker
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [str(agentstream), "dev", "--run-dir", str(self.run_dir / "stack")],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            text = self.log.read_text(errors="replace")
            found = re.search(r"^Kafka\s+(\S+)", text, re.MULTILINE)
            if found and "Pipeline running" in text:
                return found.group(1)
            if self.proc.poll() is not None:
                raise SystemExit(f"agentstream dev exited ({self.proc.returncode}):\n{text}")
            time.sleep(0.2)
        raise SystemExit(f"agentstream dev not running after {STARTUP_TIMEOUT_S:.0f}s: {self.log}")

    def __exit__(self, *exc: object) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def expected_partition(key: str, partitions: int) -> int:
    """Where Java's default partitioner (murmur2, positive) puts ``key``."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def build(client: Client) -> str | None:
    """Build ``client``; an error text, or None when it built."""
    for command in client.build:
        done = subprocess.run(
            command,
            cwd=ROOT / client.folder,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_S,
            check=False,
        )
        if done.returncode != 0:
            return f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}"
    return None


def run(client: Client, bootstrap: str, partitions: int) -> str | None:
    """Run ``client`` against the pipeline; an error text, or None when it passed."""
    env = {**os.environ, "AGENTSTREAM_BOOTSTRAP": bootstrap, "AGENTSTREAM_SCHEMAS": str(SCHEMAS)}
    done = subprocess.run(
        client.run,
        cwd=ROOT / client.folder,
        capture_output=True,
        text=True,
        env=env,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return f"exit {done.returncode}:\n{done.stdout}{done.stderr}"
    answer = json.loads(lines[-1])
    print(f"  {json.dumps(answer)}")
    want = expected_partition(client.key, partitions)
    if answer["state"] != "COMPLETED" or "5" not in str(answer["content"]):
        return f"unexpected answer {answer}"
    if answer["partition"] != want:
        return f"request landed on partition {answer['partition']}, murmur2 says {want}"
    return None


def check(client: Client, bootstrap: str, partitions: int) -> str:
    """``passed``, ``SKIPPED (...)`` or ``FAILED (...)`` for one client."""
    missing = [tool for tool in client.tools if shutil.which(tool) is None]
    if missing:
        return f"SKIPPED (toolchain missing: {', '.join(missing)} not on PATH)"
    started = time.monotonic()
    error = build(client)
    built = time.monotonic()
    if error is None:
        error = run(client, bootstrap, partitions)
    timing = f"build {built - started:.1f}s, run {time.monotonic() - built:.1f}s"
    if error is not None:
        print(error, file=sys.stderr)
        return f"FAILED ({timing})"
    return f"passed ({timing})"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--require-all", action="store_true", help="a skipped client fails")
    parser.add_argument("--only", default="", help="comma-separated client names")
    args = parser.parse_args(argv)
    chosen = [c for c in CLIENTS if not args.only or c.name in args.only.split(",")]
    partitions = Settings().topics.partitions
    results: dict[str, str] = {}
    with (
        tempfile.TemporaryDirectory(prefix="agentstream-clients-") as tmp,
        DevPipeline(Path(tmp)) as bootstrap,
    ):
        print(f"pipeline running on {bootstrap}")
        for client in chosen:
            print(f"== {client.name}")
            results[client.name] = check(client, bootstrap, partitions)
            print(f"== {client.name}: {results[client.name]}")
    print("clients: " + "; ".join(f"{name} {result}" for name, result in results.items()))
    failed = any(r.startswith("FAILED") for r in results.values())
    skipped = any(r.startswith("SKIPPED") for r in results.values())
    return 1 if failed or (skipped and args.require_all) else 0


if __name__ == "__main__":
    sys.exit(main())
