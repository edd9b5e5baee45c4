"""The OpScope application: session state, scheduling, windows and the command line."""
