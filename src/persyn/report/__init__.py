"""What a finished run tells its reader: the summary (`summary.py`), the HTML report with
its plots (`html.py`, `plots.py`), the dataset card (`card.py`) and `persyn inspect`
(`inspect.py`)."""
