"""The toy model's quality benchmark (same as `pickstyle bench quality`): held-out moving clips in
every toy style, scored against the exact ground truth, with the ablation rows of docs/results.md.

    python benchmarks/quality.py --clips 4 --out bench-quality
"""

import argparse
import sys

from pickstyle.errors import PickStyleError
from pickstyle.toy.quality import add_quality_arguments, run_quality_benchmark

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_quality_arguments(parser)
    try:
        run_quality_benchmark(parser.parse_args())
    except PickStyleError as err:
        sys.exit(f"benchmarks/quality.py: error: {err}")
