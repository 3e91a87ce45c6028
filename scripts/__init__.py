"""The protocol scripts' Python home: `runs` (checks, run folders, train.py argv per protocol) and
`launch` (the command line the scripts/*.sh wrappers call)."""
