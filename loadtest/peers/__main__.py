"""``python -m loadtest.peers [PEER ...]``: :func:`loadtest.peers.smoke` (default: every peer)."""

import sys

from loadtest.peers import NAMES, smoke

sys.exit(1 if smoke(tuple(sys.argv[1:]) or NAMES) else 0)
