"""Imported first by every benchmark: it measures this checkout's tapegrad, not some
other installed copy (``python benchmarks/bench_engine.py`` from anywhere)."""

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parent.parent)
if ROOT not in sys.path[:1]:
    sys.path.insert(0, ROOT)
