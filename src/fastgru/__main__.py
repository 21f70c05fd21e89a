"""`python -m fastgru COMMAND ...`: the same as the `fastgru` console command."""
import sys

from fastgru.cli import main

sys.exit(main())
