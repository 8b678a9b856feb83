"""`swarmlet dashboard`: a live, interactive terminal view of nodes, services, tasks and events.

Pure parts, state in and screen out: `view` builds a frozen view model from control API results
(`transitions` turns the event feed into changes), `lists` says what each screen lists, `keys` is
the key handling (a state machine over `UiState`), `render` and `screens` draw a View and a
UiState for a given terminal size (with `panels`, `task_grid`, `task_list`, `table`, `cells`).
I/O: `feeds` polls the agent and follows its events and logs (trio), `actions` makes the control
API calls the CLI makes, and `tui` is the Textual app that runs them and draws the screens.
"""
