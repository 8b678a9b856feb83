"""The Docker labels swarmlet puts on what it creates. An agent only ever touches containers and
networks that carry its cluster's id and its own node id."""

LABEL_CLUSTER = "swarmlet.cluster"
LABEL_NODE = "swarmlet.node"
LABEL_SERVICE = "swarmlet.service"
LABEL_TASK = "swarmlet.task"
LABEL_SLOT = "swarmlet.slot"
LABEL_STACK = "swarmlet.stack"
LABEL_NETWORK = "swarmlet.network"  # on a node's bridge: the cluster-wide network it stands for
