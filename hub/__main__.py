"""`python -m hub` is `storelink-hub`."""

from hub.cli import main

main()
