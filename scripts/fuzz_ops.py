"""The long fuzzing run: the property tests of tests/test_hardening_ops.py with many examples.

    python scripts/fuzz_ops.py                 # 5000 examples per property
    python scripts/fuzz_ops.py --examples 20000

For the strictest run, build with bounds checking first
(IM2COLNET_BOUNDSCHECK=1 pip install -e .): an index error then raises instead
of reading the wrong memory. Prints pytest's summary and hypothesis' statistics
(how many examples each property tried).
"""
import argparse
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=5000, help="examples per property")
    args = parser.parse_args()
    env = dict(os.environ, IM2COLNET_FUZZ_EXAMPLES=str(args.examples))
    test_file = os.path.join(HERE, os.pardir, "tests", "test_hardening_ops.py")
    selection = "fuzz or invalid or never_crash"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test_file,
               "-k", selection, "--hypothesis-show-statistics"]
    return subprocess.call(command, env=env)


if __name__ == "__main__":
    sys.exit(main())
