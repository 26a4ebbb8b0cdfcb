"""The shell: the `evoforge` command line, the local servers of `evoforge ui`, and the Prefect start-up checks."""
