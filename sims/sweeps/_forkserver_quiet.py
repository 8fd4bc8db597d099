"""The first module the forkserver of ``LocalExecutor`` preloads (``executor.PRELOAD``): SIGINT
ignored there from now on.

A Ctrl-C at a terminal reaches the whole process group, the forkserver included; during the rest
of its preload (torch: seconds) it would raise ``KeyboardInterrupt`` and print a traceback beside
the driver's one-line message. The forkserver ignores SIGINT itself once its preload is done, and
its workers ignore it too (``executor._worker_init``): a Ctrl-C is the driver's to handle, which
stops the pool. Importing this module anywhere else would have the same effect, so nothing else
imports it.
"""

import signal

signal.signal(signal.SIGINT, signal.SIG_IGN)
