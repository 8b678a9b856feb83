"""`python -m swarmlet.proxy.worker_main CONTROL_FD AGENT_PID`: a proxy worker process.

A module of its own because `python -m` runs its target as `__main__`: run as that, the module
that defines the worker's wire types would register a second copy of each class under the same
ids. This one only calls it.
"""

import sys

from swarmlet.proxy.workers import main

sys.exit(main(sys.argv))
