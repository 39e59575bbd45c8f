"""Self-training methods as compositions of steps: the method presets a comparison runs, the
plan of each model of a generation (stages.py), and the settings that change with the
generation (schedules.py)."""
