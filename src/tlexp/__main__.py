import sys

from tlexp.cli import main

sys.exit(main())
