"""One module per stage of Route-then-Generate; `persyn.pipeline` wires them together.

Each stage is a plain function `stage(run) -> stats` over a `persyn.run.Run`: it reads
and writes the run directory through `run.store` (`persyn.artifacts.RunArtifacts`) and
returns the statistics its completion marker keeps. Whether a stage needs to run at all is
decided by the pipeline from the stage table, not here.
"""
