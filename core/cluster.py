"""Running the heavy steps on Dask (dask.distributed): the one home of the DASK_SCHEDULER option.

``scheduler`` (the DASK_SCHEDULER parameter of preprocess, train and predict) is parsed here
once (:func:`parse_scheduler`):

- empty or None: everything runs in this process, as without Dask (the default);
- ``local:N``: a :class:`distributed.LocalCluster` of N worker processes on this machine,
  started for the run and shut down after it (threads per worker: cores // N);
- a scheduler address (``tcp://host:8786``, ``tls://...``, or ``host:port``): an existing
  cluster (``dask scheduler`` and ``dask worker``), which must be reachable before any work
  starts.

:func:`dask_client` connects (and starts a local cluster); :func:`run_tasks` submits units of
work with a bounded number in flight (so results never pile up in the client's memory), yields
their results as they complete, polls the run's cancellation while it waits, and cancels every
outstanding future when the run stops for any reason. Dask retries the tasks of a worker that
died (``distributed.scheduler.allowed-failures``); a task that keeps killing workers ends the run
with one message.

Workers import ``smdownscale.core`` (the plugin folder on their PYTHONPATH) and need the
learners of ``requirements.txt``; they read inputs themselves, so every path given to a run
must be readable from every worker (a shared file system, or GDAL virtual file systems such as
``/vsicurl/`` and ``/vsis3/``). Models travel as the model file's bytes (never as booster
objects) and are verified by :func:`.modelfile.load_model` on each worker; model files stay JSON
and the boosters' native files.

Trust: Dask's own protocol serialises tasks and results with pickle, so whoever can reach the
scheduler can run code on its workers and hand results to this process. A cluster is therefore
trusted like this machine (README: running on a cluster - private network or ``tls://`` with
Dask's certificates); nothing read from a model file or an input ever goes through that path.
"""
import contextlib
import dataclasses
import functools
import logging
import os
import re

from .common import SmdError, python_interpreter, whole_number

#: how long a scheduler address may take to answer before the run is refused (seconds)
CONNECT_TIMEOUT_SECONDS = 10
#: how long an existing scheduler may have no worker before the run is refused (seconds)
WORKER_WAIT_SECONDS = 30
#: how often the client checks the run's cancellation while tasks run (seconds)
POLL_SECONDS = 0.25

_LOCAL = re.compile(r"local\s*:\s*(\S+)", re.IGNORECASE)
_ADDRESS = re.compile(r"(?:(tcp|tls|ucx)://)?(\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.-]+):(\d{1,5})")
SCHEDULER_HELP = ("leave it empty to run in this process, write local:N for N worker processes on "
                  "this machine, or give a Dask scheduler address such as tcp://10.0.0.5:8786")


@dataclasses.dataclass(frozen=True)
class Scheduler:
    """A parsed DASK_SCHEDULER: ``local_workers`` for ``local:N``, else ``address``."""

    local_workers: int = None
    address: str = None

    def __str__(self):
        return f"local:{self.local_workers}" if self.local_workers else self.address


def parse_scheduler(value):
    """The DASK_SCHEDULER option: None (run in this process), or a :class:`Scheduler`.

    Raises
    ------
    SmdError
        Text that is neither empty, ``local:N`` with N a whole number >= 1, nor a
        ``[tcp|tls|ucx://]host:port`` address.
    """
    if isinstance(value, Scheduler):
        return value
    if value is None or not str(value).strip():
        return None
    text = str(value).strip()
    local = _LOCAL.fullmatch(text)
    if local:
        try:
            workers = whole_number(local.group(1), "N", minimum=1)
        except SmdError as error:
            raise SmdError(f"{text!r} is not a Dask scheduler: local:N needs N, the number of worker "
                           f"processes, as a whole number of at least 1 (e.g. local:2).") from error
        return Scheduler(local_workers=workers)
    address = _ADDRESS.fullmatch(text)
    if address and 0 < int(address.group(3)) < 65536:
        protocol = address.group(1) or "tcp"
        return Scheduler(address=f"{protocol}://{address.group(2)}:{address.group(3)}")
    raise SmdError(f"{text!r} is not a Dask scheduler: {SCHEDULER_HELP}.")


def worker_path(path):
    """``path`` as a worker must open it: absolute (workers have their own working folder);
    GDAL virtual file system paths (``/vsis3/...``) and URLs unchanged."""
    text = os.fspath(path)
    if text.startswith("/vsi") or "://" in text:
        return text
    return os.path.abspath(text)


def _quiet_dataframe_notice():
    """distributed imports dask.dataframe when pandas is installed, which warns (FutureWarning,
    in QGIS's log and every worker's) that its optional query planner dask-expr is missing;
    nothing here uses dataframes, so without dask-expr the planner is switched off for this
    process and the workers it starts (the environment is what spawned workers read)."""
    import importlib.util

    try:
        if importlib.util.find_spec("dask_expr") is not None:
            return
    except (ImportError, ValueError):
        return
    os.environ.setdefault("DASK_DATAFRAME__QUERY_PLANNING", "False")
    try:
        import dask

        if dask.config.get("dataframe.query-planning", None) is None:
            dask.config.set({"dataframe.query-planning": False})
    except ImportError:
        pass


def _import_distributed():
    _quiet_dataframe_notice()
    try:
        import distributed
    except ImportError as error:
        # core never imports QGIS: the dependency dialog is named as text (ui/dependencies.py,
        # the plugin's Raster menu entry)
        raise SmdError("Running on Dask needs dask and distributed, which are not installed for this "
                       f"Python ({error}). In the QGIS desktop: Raster > Soil moisture downscaling > "
                       "Check dependencies..., tick the optional 'Dask scale-out' packages, Install, "
                       "then restart QGIS. Elsewhere: pip install the dask and distributed pins of the "
                       "plugin's requirements.txt (workers of a cluster need them too). Or leave the "
                       "Dask scheduler empty to run in this process.") from error
    return distributed


ENVIRONMENT_HELP = ("the scheduler and every worker need the same Python, GDAL and packages as this "
                    "machine (the plugin's requirements.txt) and the same smdownscale plugin: put the folder "
                    "holding the smdownscale plugin folder on their PYTHONPATH (README: running on a "
                    "cluster)")


@functools.lru_cache(maxsize=1)
def _core_digest():
    """sha256 of the plugin's core code (every .py below core/): equal on every machine that
    runs the same plugin version."""
    import hashlib

    root = os.path.dirname(os.path.abspath(__file__))
    digest = hashlib.sha256()
    for folder, _, files in sorted(os.walk(root)):
        for name in sorted(f for f in files if f.endswith(".py")):
            path = os.path.join(folder, name)
            digest.update(os.path.relpath(path, root).encode("utf-8"))
            with open(path, "rb") as handle:
                digest.update(handle.read())
    return digest.hexdigest()


def environment():
    """What must be equal on the client, the scheduler and every worker for their results to be
    this machine's: Python (major.minor), GDAL, the learners' and numpy's versions, the plugin's
    core code. Runs as a task too (:func:`check_environment`)."""
    import platform

    import rasterio

    from .modelfile import library_versions

    return {"python": ".".join(platform.python_version_tuple()[:2]), "gdal": rasterio.__gdal_version__,
            **library_versions(), "smdownscale core code": _core_digest()[:12]}


def check_environment(client):
    """SmdError, before any work, when the scheduler or a worker cannot load the plugin's tasks
    or runs other versions than this machine (:func:`environment`)."""
    mine = environment()
    try:
        # a submitted task is unpickled by the scheduler and a worker; run() reaches every worker
        found = {"a worker (through the scheduler)": client.submit(environment, pure=False).result(
            timeout=WORKER_WAIT_SECONDS)}
        found.update(client.run(environment))
    except SmdError:
        raise
    except Exception as error:  # noqa: BLE001 - a deserialization RuntimeError, ImportError, ...
        text = " ".join(str(error).split())
        cause = text.split(". ")[0].rstrip(".") if text else type(error).__name__
        raise SmdError(f"The Dask cluster cannot run the plugin's tasks ({cause}): {ENVIRONMENT_HELP}.") from error
    for where, theirs in found.items():
        different = [f"{key} {theirs.get(key)} there, {value} here" for key, value in mine.items()
                     if theirs.get(key) != value]
        if different:
            raise SmdError(f"The Dask worker {where} runs another environment ({'; '.join(different)}): "
                           f"{ENVIRONMENT_HELP}.")


@contextlib.contextmanager
def dask_client(scheduler, progress=None):
    """A :class:`distributed.Client` for ``scheduler`` (parsed by :func:`parse_scheduler`) for
    the duration of the block; a local cluster is started and shut down with it.

    Raises SmdError, before any work, when Dask is missing, the local cluster cannot start, the
    scheduler cannot be reached in :data:`CONNECT_TIMEOUT_SECONDS`, or has no worker within
    :data:`WORKER_WAIT_SECONDS`, or a worker cannot run the plugin's tasks or runs other versions
    (:func:`check_environment`).
    """
    scheduler = parse_scheduler(scheduler)
    distributed = _import_distributed()
    if scheduler.local_workers:
        with _local_cluster(distributed, scheduler.local_workers) as client:
            check_environment(client)
            if progress is not None:
                progress.info(f"Dask: local cluster of {scheduler.local_workers} worker process(es), "
                              f"{total_threads(client)} thread(s) in all")
            yield client
        return
    try:
        client = distributed.Client(scheduler.address, timeout=CONNECT_TIMEOUT_SECONDS,
                                    set_as_default=False)
    except (OSError, TimeoutError, ValueError) as error:
        raise SmdError(f"The Dask scheduler {scheduler.address} cannot be reached ({error or type(error).__name__}). "
                       "Start it (dask scheduler) and its workers (dask worker "
                       f"{scheduler.address}), check the address and port, or leave the Dask "
                       "scheduler empty to run in this process.") from error
    try:
        try:
            client.wait_for_workers(1, timeout=WORKER_WAIT_SECONDS)
        except (TimeoutError, OSError) as error:
            raise SmdError(f"The Dask scheduler {scheduler.address} has no worker ({WORKER_WAIT_SECONDS} s "
                           f"waited); start one with: dask worker {scheduler.address}") from error
        check_environment(client)
        if progress is not None:
            progress.info(f"Dask: scheduler {scheduler.address}, {len(client.scheduler_info()['workers'])} "
                          f"worker(s), {total_threads(client)} thread(s)")
        yield client
    finally:
        client.close()


@contextlib.contextmanager
def _local_cluster(distributed, n_workers):
    import multiprocessing

    # Workers are spawned processes; inside QGIS (desktop or qgis_process) sys.executable is
    # the QGIS binary, which cannot run them: spawn them with the Python QGIS runs on.
    interpreter = python_interpreter()
    import multiprocessing.spawn as spawn

    previous = spawn.get_executable()
    if interpreter:
        multiprocessing.set_executable(interpreter)
    try:
        threads = max(1, (os.cpu_count() or 1) // n_workers)
        try:
            cluster = distributed.LocalCluster(
                n_workers=n_workers, threads_per_worker=threads, processes=True, host="127.0.0.1",
                dashboard_address=None, silence_logs=logging.ERROR)
        except Exception as error:  # noqa: BLE001 - any start failure is one message
            raise SmdError(f"The local Dask cluster of {n_workers} worker(s) could not start ({error}); "
                           "leave the Dask scheduler empty to run in this process.") from error
        try:
            client = distributed.Client(cluster, set_as_default=False)
            try:
                yield client
            finally:
                client.close()
        finally:
            cluster.close()
    finally:
        multiprocessing.set_executable(previous)


def total_threads(client):
    """Threads of every worker of ``client``'s cluster (at least 1)."""
    return max(1, sum(w.get("nthreads", 1) for w in client.scheduler_info()["workers"].values()))


def run_tasks(client, function, units, *, progress, args=(), in_flight=None, label="task"):
    """Run ``function(unit, *args)`` on the cluster for every unit; yield ``(unit, result)`` as
    each completes (any order).

    At most ``in_flight`` tasks (default: twice the cluster's threads) are submitted at once,
    so the client holds a bounded number of results. ``args`` are passed to every task
    (futures from :meth:`Client.scatter` stay on the workers). ``progress.check()`` is polled
    while waiting; on cancellation, an error in a task, or a closed generator, every outstanding
    future is cancelled before the exception propagates.

    Raises
    ------
    SmdError
        A task whose worker died on every retry (``KilledWorker``), or a lost connection to the
        scheduler; an SmdError raised in a task comes through as it is.
    """
    distributed = _import_distributed()
    units = iter(units)
    limit = in_flight or 2 * total_threads(client)
    running = {}

    def submit_next():
        for unit in units:
            running[client.submit(function, unit, *args, pure=False)] = unit
            return True
        return False

    try:
        while len(running) < limit and submit_next():
            pass
        while running:
            for future in _wait(distributed, client, list(running), progress):
                unit = running.pop(future)
                result = _result(distributed, future, label)
                yield unit, result
                submit_next()
    finally:
        if running:
            client.cancel(list(running), force=True)


def ordered_results(client, function, units, *, progress, args=(), ahead=2, label="task"):
    """Like :func:`run_tasks`, but yield the results in the order of ``units``, with ``ahead``
    tasks submitted before their result is needed (reading ahead of the consumer)."""
    import collections

    distributed = _import_distributed()
    units = iter(units)
    queue = collections.deque()

    def fill():
        while len(queue) < max(1, ahead):
            unit = next(units, _END)
            if unit is _END:
                return
            queue.append(client.submit(function, unit, *args, pure=False))

    try:
        fill()
        while queue:
            future = queue[0]
            while not _wait(distributed, client, [future], progress):
                pass
            result = _result(distributed, future, label)
            queue.popleft()
            fill()
            yield result
    finally:
        if queue:
            client.cancel(list(queue), force=True)


_END = object()


def _wait(distributed, client, futures, progress):
    """The futures done after at most :data:`POLL_SECONDS` (maybe none); checks cancellation."""
    progress.check()
    try:
        with client.as_current():  # wait() takes the current client, not an argument
            done, _ = distributed.wait(futures, timeout=POLL_SECONDS, return_when="FIRST_COMPLETED")
    except TimeoutError:
        return set()
    return done


def _result(distributed, future, label):
    """The result of a finished future; cluster failures become one SmdError each."""
    try:
        result = future.result()
    except distributed.KilledWorker as error:
        raise SmdError(f"A Dask worker died every time it ran a {label} ({error}); the run stopped "
                       "and wrote nothing. Look at the workers' logs (memory limit, missing packages "
                       "or input files on the worker).") from error
    except distributed.CancelledError as error:
        raise SmdError(f"A {label} was cancelled on the Dask cluster (scheduler restarted or "
                       "connection lost); the run stopped and wrote nothing.") from error
    except ModuleNotFoundError as error:
        raise SmdError(f"A Dask worker cannot import {error.name!r} for a {label}: install the plugin's "
                       "requirements on every worker and put the folder holding the smdownscale "
                       "plugin on the workers' PYTHONPATH (README: running on a cluster).") from error
    future.release()
    return result
