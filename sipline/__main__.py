import sys

from sipline.cli import main

sys.exit(main())
