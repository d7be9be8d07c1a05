"""Pure decision classes: no I/O, time passed in as ``now``; tested without sockets or Redis."""
