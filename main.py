"""OpScope: ``python main.py [IMAGE] [--op NAME] [--set k=v ...] [--device D] [--render OUT.png]``.

A splash shows before the heavy imports (torch, the operators) when a window is to open."""

import sys

if __name__ == "__main__":
    from explorer.splash import early_splash

    splash = early_splash(sys.argv[1:])
    from explorer.cli import main

    sys.exit(main(splash=splash))
