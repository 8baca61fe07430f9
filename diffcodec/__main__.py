"""`python -m diffcodec` runs the command line."""

from .cli import main

main()
