"""Node-suite cases edgerun does not pass yet, each with its reason.

Regenerate the list with ``python bench/conformance.py --failures FILE`` and keep the
reasons honest: a case leaves this list the moment it passes (the runner reports an
unexpected success as a failure).
"""

XFAIL: dict[str, str] = {}
