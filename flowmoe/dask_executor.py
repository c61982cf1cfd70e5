"""Sweeps on Dask (``dask.distributed``): the executor behind ``run_sweep(..., executor="dask")``.

:func:`flowmoe.sweep.run_sweep` keeps the cache and resume logic; an executor only runs
:func:`flowmoe.sweep.execute` on members and hands back their records as they finish. Each member
writes its own cache files from the worker (so workers and the client must share the cache folder:
one machine, or a shared file system on a cluster).

- ``DaskExecutor(workers=n, xla_flags=F)`` starts a :class:`distributed.LocalCluster` of ``n``
  single-threaded worker processes with ``XLA_FLAGS=F`` (run_sweep passes the single-thread flags of the
  local pool, so both give the same numbers bit for bit), and closes it at the end;
- ``DaskExecutor(scheduler="tcp://host:8786", xla_flags=F)`` connects to a running scheduler (e.g. one
  started by ``dask-jobqueue``'s ``SLURMCluster``; README) within ``timeout`` seconds; a worker plugin
  sets ``XLA_FLAGS`` on workers that have none (effective on workers that have not run JAX yet);
- ``DaskExecutor(client=client)`` uses a :class:`distributed.Client` the caller owns (not closed).

Ctrl-C (or any exception in the caller's loop) cancels the members not yet started; members already
running finish and are cached, as with the local pool. dask is imported here only: flowmoe works
without it unless ``--executor dask`` is asked for.
"""

from __future__ import annotations

import logging
import os
import time

from .errors import SpecError

CONNECT_TIMEOUT_S = 10.0
INSTALL_HINT = "pip install 'flowmoe[dask]'"


def import_distributed():
    """The ``distributed`` module, or a one-line SpecError saying how to install it."""
    try:
        import distributed
    except ImportError:
        raise SpecError("executor", f"'dask' needs dask.distributed, which is not installed: "
                                    f"{INSTALL_HINT}") from None
    return distributed


def _xla_plugin(distributed, xla_flags: str):
    class XlaFlags(distributed.WorkerPlugin):
        """Set XLA_FLAGS on each worker unless set there (effective when JAX is not yet initialised)."""

        name = "flowmoe-xla-flags"

        def __init__(self, flags):
            self.flags = flags

        def setup(self, worker):
            os.environ.setdefault("XLA_FLAGS", self.flags)

    return XlaFlags(xla_flags)


class DaskExecutor:
    """submit / as_completed / drain / close over a ``distributed.Client`` (see the module docstring)."""

    def __init__(self, workers: int = 1, scheduler: str | None = None, client=None,
                 timeout: float = CONNECT_TIMEOUT_S, xla_flags: str | None = None):
        self._distributed = distributed = import_distributed()
        self._cluster = None
        self._owns_client = client is None
        if client is not None:
            self.client = client
        elif scheduler:
            try:
                self.client = distributed.Client(scheduler, timeout=timeout, set_as_default=False)
            except (OSError, TimeoutError, ValueError) as err:
                first = str(err).splitlines()[0] if str(err) else type(err).__name__
                raise SpecError("scheduler", f"cannot reach the Dask scheduler at {scheduler!r} within "
                                             f"{timeout:g} s ({first})") from None
        else:
            flags = os.environ.get("XLA_FLAGS", xla_flags)
            env = {"XLA_FLAGS": flags} if flags else {}
            self._cluster = distributed.LocalCluster(n_workers=int(workers), threads_per_worker=1,
                                                     processes=True, dashboard_address=":0",
                                                     silence_logs=logging.ERROR, env=env)
            self.client = distributed.Client(self._cluster, set_as_default=False)
        if self._cluster is None and xla_flags:
            self.client.register_plugin(_xla_plugin(distributed, xla_flags))

    def submit(self, fn, *args):
        return self.client.submit(fn, *args, pure=False)

    def as_completed(self, futures):
        return self._distributed.as_completed(list(futures), loop=self.client.loop)

    def drain(self, futures) -> None:
        """Cancel the members not yet started and wait for the running ones (they write their cache).

        Waits while those members are still executing on some worker: a worker that died (e.g. it got
        the terminal's Ctrl-C too) ends the wait instead of hanging it; Ctrl-C again stops waiting."""
        pending = [f for f in futures if not f.done()]
        # Dask cannot stop a task that is executing: cancelled, it still runs to its end (and writes
        # its cache files); the others never start.
        self.client.cancel(pending)
        keys = {f.key for f in pending}
        while self._executing() & keys:
            time.sleep(0.2)

    def _executing(self) -> set:
        """Keys of the tasks executing on some worker now (empty if the cluster cannot say)."""
        try:
            return {key for stacks in self.client.call_stack().values() for key in stacks}
        except Exception:  # noqa: BLE001 -- scheduler or workers gone
            return set()

    def close(self) -> None:
        if self._owns_client:
            self.client.close()
        if self._cluster is not None:
            self._cluster.close()
