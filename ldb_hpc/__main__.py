import sys

from ldb_hpc.cli.main import main

sys.exit(main())
