"""The workflow's steps: one module per command a Snakemake rule runs (cli.py), each a `run`
with explicit inputs and outputs."""
