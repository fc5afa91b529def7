import sys

from edgenet.cli import main

sys.exit(main())
