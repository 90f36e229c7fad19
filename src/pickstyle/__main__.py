import sys

from pickstyle.cli import main

sys.exit(main())
