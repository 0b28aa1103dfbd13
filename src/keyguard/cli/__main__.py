"""``python -m keyguard.cli``."""

from keyguard.cli.main import main

main()
