"""OpScope: ``python main.py [IMAGE] [--op NAME] [--set k=v ...] [--device D] [--render OUT.png]``."""

import sys

from explorer.cli import main

if __name__ == "__main__":
    sys.exit(main())
