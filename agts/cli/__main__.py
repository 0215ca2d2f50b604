import sys

from agts.cli import main

sys.exit(main())
