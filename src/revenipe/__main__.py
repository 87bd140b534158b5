import sys

from revenipe.cli.main import main

sys.exit(main())
