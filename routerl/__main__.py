import sys

from routerl.cli import main

sys.exit(main())
