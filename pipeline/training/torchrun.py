"""`python -m pipeline.training.torchrun ARGS`: torchrun, ending with the run that started it.

That run passes its pid in DEMOIRE_LAUNCHED_BY. Killed outright (SIGKILL, the out-of-memory killer), it cannot
stop torchrun, whose ranks would train on unseen: the kernel then sends this process SIGTERM, on which torchrun
stops its ranks. The ranks get this process's pid in turn, to end with it (`demoire train`).
"""

import os
import signal

from torch.distributed.run import main

from pipeline.lifetime import die_with_parent
from pipeline.training.distributed import LAUNCHED_BY

if __name__ == "__main__":
    if LAUNCHED_BY in os.environ:
        die_with_parent(int(os.environ[LAUNCHED_BY]), signal.SIGTERM)
    os.environ[LAUNCHED_BY] = str(os.getpid())
    main()
