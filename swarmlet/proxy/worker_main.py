"""`python -m swarmlet.proxy.worker_main CONTROL_FD AGENT_PID`: a proxy worker process.

Only the entry point. `python -m` runs its target as `__main__`, a second copy beside any import
of the same module by name; keeping the target this small means nothing that must exist once
(the wire types of `swarmlet.proxy.worker_protocol`, the worker's code in
`swarmlet.proxy.worker_process`) is ever defined twice.
"""

import sys

from swarmlet.proxy.worker_process import main

sys.exit(main(sys.argv))
