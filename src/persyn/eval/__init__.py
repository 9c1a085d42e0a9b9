"""Does routing help? Router evaluation (`routers.py`), the baseline datasets
(`baselines.py`), student evaluation (`student.py`) and the experiment that trains and
evaluates a student on each dataset (`experiment.py`)."""
