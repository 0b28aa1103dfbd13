"""The command-line edge: the only place that maps errors to exit codes and renders output."""
