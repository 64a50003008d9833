"""`python -m phonewipe`: the command line."""
from phonewipe.cli import main

main()
