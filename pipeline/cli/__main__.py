"""`python -m pipeline.cli` (torchrun -m pipeline.cli train runs one DDP rank this way)."""

from pipeline.cli import main

main()
