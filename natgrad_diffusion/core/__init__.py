"""Settings and run plumbing every layer uses: the configuration dataclasses and their flat names, errors, file
integrity, logs, ``.npz`` and text files, processes, the run directory and the shipped files' folder."""
