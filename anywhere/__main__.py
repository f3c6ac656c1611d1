import sys

from anywhere.cli import main

sys.exit(main())
