"""The toy model's quality benchmark, the same as `pickstyle bench quality` (which see for the
options): held-out moving clips in every toy style, scored against the exact ground truth, with
the ablation rows of docs/results.md.

    python benchmarks/quality.py --clips 3 --out bench-quality
"""

import sys

from pickstyle.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "quality", *sys.argv[1:]]))
