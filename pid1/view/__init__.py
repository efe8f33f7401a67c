"""The supervisor view: the state rendered as lines of text for a terminal
of a given size, the same on VT2, in `<state_dir>/status` and from
`python -m pid1 status`.

- `text`: fitting text into terminal cells and formatting values (stdlib only).
- `header`: the header lines, one per state section (uses text and the state schema).
- `render`: the phase, container and log tables and the whole screen (uses text, header).
- `statefile`: reading a state.json back into the state's dataclasses, however it is broken.
- `cli`: `python -m pid1 status` (uses statefile and render).

The view reads the one schema the writers use (pid1/state.py and
pid1/state_schema.py); nothing in it imports a phase.
"""
