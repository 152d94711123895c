import sys

from aliak.cli import main

sys.exit(main())
