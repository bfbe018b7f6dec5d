import sys

from universal.cli import main

sys.exit(main())
