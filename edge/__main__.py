"""`python -m edge` is `storelink-edge`."""

from edge.cli import main

main()
