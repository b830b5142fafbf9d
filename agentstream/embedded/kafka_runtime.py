"""Apache Kafka's broker classpath: resolved once from Maven Central into a cache folder.

``kafka_classpath()`` returns ``<cache>/kafka-<version>/lib`` (every jar the broker needs). The
first call runs Maven on the packaged ``maven/pom.xml`` (``~/.m2`` is Maven's own cache); later
calls find the folder complete and touch neither Maven nor the network. A file lock makes
parallel first calls (several test sessions, a dev stack and a bench) resolve once.

The cache folder is ``$AGENTSTREAM_CACHE_DIR``, else ``$XDG_CACHE_HOME/agentstream``, else
``~/.cache/agentstream``.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

from agentstream.embedded.exceptions import EmbeddedStackError

log = logging.getLogger(__name__)

KAFKA_VERSION = "4.4.0"
_POM = Path(__file__).parent / "maven" / "pom.xml"
_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
_COMPLETE = ".complete"
_MAVEN_TIMEOUT_S = 900.0


def cache_root() -> Path:
    """Where resolved runtimes are kept (see the module docstring)."""
    explicit = os.environ.get("AGENTSTREAM_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "agentstream"


def java_binary() -> Path:
    """``$JAVA_HOME/bin/java`` if set, else ``java`` on ``PATH``; a one-line error if neither."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return Path(java_home) / "bin" / "java"
    found = shutil.which("java")
    if found is None:
        raise EmbeddedStackError(
            "Apache Kafka needs Java 17 or newer: `java` is not on PATH and JAVA_HOME is not set "
            "(install a JDK, e.g. apt-get install openjdk-17-jre-headless, or use the default "
            "Tansu broker)"
        )
    return Path(found)


def kafka_classpath(version: str = KAFKA_VERSION, *, cache: Path | None = None) -> Path:
    """The folder of jars for Apache Kafka ``version``, resolving it with Maven if needed."""
    home = (cache or cache_root()) / f"kafka-{version}"
    if (home / _COMPLETE).is_file():
        return home / "lib"
    home.parent.mkdir(parents=True, exist_ok=True)
    with (home.parent / f"kafka-{version}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be resolving the same version
        if not (home / _COMPLETE).is_file():
            _resolve(version, home)
    return home / "lib"


def _resolve(version: str, home: Path) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise EmbeddedStackError(
            f"Apache Kafka {version} is not in the cache ({home}) and `mvn` is not on PATH to "
            "fetch it from Maven Central (install Maven, e.g. apt-get install maven)"
        )
    staging = home.parent / f"{home.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    shutil.copy(_POM, staging / "pom.xml")
    argv = [
        mvn,
        "-q",
        "-B",
        f"{_DEPENDENCY_PLUGIN}:copy-dependencies",
        "-DincludeScope=runtime",
        f"-Dkafka.version={version}",
        f"-DoutputDirectory={staging / 'lib'}",
    ]
    log.info("resolving Apache Kafka %s with Maven into %s", version, home)
    started = time.monotonic()
    try:
        done = subprocess.run(
            argv,
            cwd=staging,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_MAVEN_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise EmbeddedStackError(
            f"Maven did not resolve Apache Kafka {version} within {_MAVEN_TIMEOUT_S:g}s"
        ) from exc
    if done.returncode != 0 or not any((staging / "lib").glob("kafka_2.13-*.jar")):
        shutil.rmtree(staging, ignore_errors=True)
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-8:])
        raise EmbeddedStackError(
            f"Maven could not resolve org.apache.kafka:kafka_2.13:{version} "
            f"(exit code {done.returncode}; is Maven Central reachable?)\n{tail}"
        )
    (staging / _COMPLETE).write_text(f"{version}\n")
    shutil.rmtree(home, ignore_errors=True)
    staging.rename(home)
    log.info("Apache Kafka %s resolved in %.1fs", version, time.monotonic() - started)
