"""The names of the files in a run folder (OUTPUT_DIR), shared by the engine, the methods, the protocol
scripts and the tools.

It imports nothing, so the protocol scripts can check a run folder without loading torch.
"""

# The merged configuration of the run (train.py writes it; the analysis tools rebuild the model from it).
RUN_CONFIG_FILENAME = "config.yaml"
# The run's results (trainers/results.py writes it; a run folder holding it is finished).
RESULTS_FILENAME = "results.json"
# One evaluated part of a zero-shot run (ZeroshotCLIP writes it; trainers/results.py combines the parts).
ZEROSHOT_PART_FILENAME = "zeroshot.json"
