"""`python -m training` is the `winnow` command."""
import sys

from training.cli import main

sys.exit(main())
