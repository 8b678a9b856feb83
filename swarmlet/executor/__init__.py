"""What runs a node's tasks: the task driver and the Docker adapter behind it.

`driver` (the `Executor`) starts, watches and stops the containers of the tasks assigned to this
node and reports what it sees; `task_container` turns a task into a container spec (pure);
`runtime_types` are the adapter's values, `docker_translate` the pure translations to and from
the Engine API, and `docker_runtime` the one module that calls the docker SDK (in worker threads,
with its exceptions translated). `networks` makes the node's bridges and service VIPs,
`secretfiles` writes secrets to a tmpfs, `hostinfo` is the one module that calls psutil, and
`labels` names what swarmlet puts on everything it creates. Nothing here decides placement.
"""
