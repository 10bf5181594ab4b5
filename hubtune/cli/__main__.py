import sys

from hubtune.cli import main

sys.exit(main())
