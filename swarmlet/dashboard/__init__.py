"""`swarmlet dashboard`: a live terminal view of nodes, services, tasks and events.

`view` builds a frozen view model from control API results (pure), `render` turns it into rich
text for a given terminal size (pure), and `app` is the trio loop that polls the agent, follows
its events and redraws with `rich.live.Live`.
"""
