"""Pure value objects and decisions: no I/O, no settings, time passed in."""
