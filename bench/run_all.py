"""`make bench`: every benchmark in turn, each beside its raw-Kafka baseline."""

import subprocess
import sys

BENCHMARKS = [
    ["bench.ingest"],
    ["bench.lifecycle", "--postgres"],
    ["bench.scoring", "--postgres"],
    ["bench.conversion", "--postgres"],
]


def main() -> int:
    for module, *args in BENCHMARKS:
        print(f"== {module}", flush=True)
        subprocess.run([sys.executable, "-m", module, *args], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
