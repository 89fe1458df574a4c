"""torchrun, ending in one line instead of a traceback when it is stopped by a signal.

    python scripts/torchrun.py --standalone --nproc_per_node=2 scripts/train.py ...   (torchrun's own arguments)

torchrun passes SIGTERM/SIGINT on to every rank (each stops at the same logged step and marks the run
`interrupted`), then raises SignalException in its own process; here that becomes one line naming the
signal and the exit status 128 + signal, as a shell reports a process stopped by it.
"""
import sys

from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.run import main

if __name__ == "__main__":
    try:
        main()
    except SignalException as err:
        print(f"torchrun: stopped by {err.sigval.name}; every rank stopped at the same step and the run is marked "
              "interrupted (the same command resumes it)", file=sys.stderr)
        sys.exit(128 + int(err.sigval))
