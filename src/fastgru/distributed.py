"""Data-parallel training over MPI ranks with mpi4py, on one machine or many.

    mpiexec -n 4 fastgru train --distributed --data ../shared/data/mr --format mr
    mpiexec -n 4 python train.py        # train.py calls model.fit(x, y, ..., distributed=True)

Every rank runs the same script on the same data. `fit(..., distributed=True)` (also
`fastgru.distributed.fit`) then trains one model together:

- Batches: all ranks shuffle and bucket with the same seeded generator, so they build the same
  global batches of `batch_size x W` samples (W ranks; batch_size is per rank) and rank r takes
  samples r, r + W, r + 2W, ... of each (strided, so the ranks get sequences of similar
  lengths). N steps on W ranks with batch b equal N steps of one process with batch W*b, to
  float rounding, when nothing random happens per sample (dropout 0).
- Start: rank 0's parameters, optimizer state, training RNG and callback state are broadcast,
  so the ranks start equal also when rank 0 resumed from a checkpoint only it can read.
- Gradients, one fused buffer per step: after backward each rank packs every gradient (each
  recurrent layer's flat gradient buffer, the Dense weights, and the Embedding rows that ANY
  rank touched in the global batch: every rank knows the global batch, so no extra message)
  into one contiguous buffer, scaled by its number of loss terms (samples, or valid time
  steps), with that count and its loss sum appended; one in-place Allreduce(SUM) and a
  division by the global count give every rank the gradient of the mean loss over the global
  batch: shards of unequal size (the last batch, padding) are weighted exactly. Every rank then
  runs the same optimizer step (lazy Adam on the same embedding rows as one process would).
- Metrics: loss, metric totals and counts, and validation (sharded the same way) are summed
  over ranks, so History, the logs and the callbacks see the global values on every rank.
- Only rank 0 prints and writes: BackupAndRestore and ModelCheckpoint run on rank 0 only (and
  any callback with `rank0_only = True`); the other callbacks run on every rank with the same
  logs, and rank 0's stop_training decision is broadcast after every epoch.
- Failure: an exception on any rank during training prints `rank r of W (host) failed ...` with
  its traceback and aborts the whole job (MPI_Abort), instead of leaving the other ranks
  waiting in a collective forever. Mistakes found before training (bad arguments, data that
  differs between ranks) raise on every rank instead (`DistributedError` on the ranks where it
  did not happen).
- Threads: `init()` gives each rank its share of the physical cores of its node (ranks on the
  same node counted with MPI_Comm_split_type(SHARED), CPU binding respected) for the kernels and
  BLAS, unless FASTGRU_NUM_THREADS / OMP_NUM_THREADS or `threads=` say otherwise.

Dropout masks differ per rank (each rank draws its own from a generator derived from the
training RNG, its rank and the epoch), so with dropout the run is reproducible for a given
number of ranks but not equal to a one-process run.

mpi4py is optional: without it this module still imports, and `init()` / `fit(...,
distributed=True)` raise MPIUnavailableError saying what to install.
"""
from __future__ import annotations

import hashlib
import os
import sys
import time
import traceback
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["init", "Context", "Agreement", "fit", "evaluate", "GradientReducer",
           "broadcast_parameters", "bcast_arrays", "touched_rows", "mpi_available",
           "MPIUnavailableError", "DistributedError", "INSTALL_HINT"]

INSTALL_HINT = ("pip install 'fastgru[mpi]' (mpi4py and the mpich wheel), or install an MPI "
                "library (Debian: apt install openmpi-bin libopenmpi-dev, or mpich "
                "libmpich-dev) and pip install mpi4py")


#: seconds between a failed rank's message and MPI_Abort: launchers may stop forwarding the
#: output of a job as soon as one of its ranks aborts
ABORT_GRACE_SECONDS = 0.5


class MPIUnavailableError(ImportError):
    """Distributed training was asked for but mpi4py or an MPI library is missing."""


class DistributedError(RuntimeError):
    """Another rank failed, or the ranks disagree (different data, options or model)."""


def mpi_available() -> bool:
    """Whether mpi4py is installed (importing it does not start MPI; init() does)."""
    import importlib.util

    return importlib.util.find_spec("mpi4py") is not None


def _mpi() -> Any:
    """The mpi4py.MPI module (MPI starts on first import); MPIUnavailableError if missing."""
    try:
        from mpi4py import MPI
    except (ImportError, RuntimeError, OSError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MPIUnavailableError(f"distributed training needs mpi4py and an MPI library "
                                  f"({detail}): {INSTALL_HINT}") from None
    return MPI


# ------------------------------------------------------------------------------------------
# threads per rank


def core_ids() -> list[tuple[str, str]]:
    """(package, core) ids of the physical cores this process may run on (its CPU affinity,
    so a launcher's binding counts); logical CPUs where the topology is not readable."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return [("cpu", str(c)) for c in range(os.cpu_count() or 1)]
    cores = set()
    for c in cpus:
        try:
            base = f"/sys/devices/system/cpu/cpu{c}/topology/"
            with open(base + "core_id") as f:
                core = f.read().strip()
            with open(base + "physical_package_id") as f:
                pkg = f.read().strip()
            cores.add((pkg, core))
        except OSError:
            cores.add(("cpu", str(c)))
    return sorted(cores)


def share_of_cores(mine: Sequence[tuple[str, str]],
                   everyone: Sequence[Sequence[tuple[str, str]]]) -> int:
    """Threads for a rank whose cores are `mine`, given the cores of every rank on its node
    (`everyone`, itself included): each core is split evenly among the ranks that may use it,
    so unbound ranks share the node's cores and bound ranks keep theirs. At least 1."""
    users = Counter(tuple(c) for cores in everyone for c in set(map(tuple, cores)))
    share = sum(1.0 / users[tuple(c)] for c in set(map(tuple, mine)))
    return max(1, int(share + 1e-9))


def _env_threads() -> int | None:
    for name in ("FASTGRU_NUM_THREADS", "OMP_NUM_THREADS"):
        v = os.environ.get(name, "").split(",")[0].strip()
        if v.isdigit() and int(v) >= 1:
            return int(v)
    return None


def _apply_threads(n: int) -> None:
    """Make `n` the process-wide default of the kernels (FASTGRU_NUM_THREADS, unless set) and
    limit the BLAS of the NumPy parts (Dense, Embedding) to n threads."""
    if _env_threads() is None:
        os.environ["FASTGRU_NUM_THREADS"] = str(n)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=n, user_api="blas")  # kept for the life of the process
    except Exception:  # pragma: no cover - threadpoolctl is a dependency; odd BLAS layouts
        pass


# ------------------------------------------------------------------------------------------
# the context


@dataclass
class Context:
    """Where this process stands in the job.

    comm: the mpi4py communicator of the training (MPI.COMM_WORLD by default); rank, size:
    this rank and the number of ranks; local_rank, local_size: the same among the ranks of this
    node; nodes: number of nodes; threads: kernel and BLAS threads of this rank; host: this
    node's name; library: the MPI library's version line."""

    comm: Any
    rank: int
    size: int
    local_rank: int
    local_size: int
    nodes: int
    threads: int
    host: str
    library: str

    @property
    def is_root(self) -> bool:
        """Rank 0: the one that prints and writes files."""
        return self.rank == 0

    def describe(self) -> str:
        """'2 ranks on 1 node, 1 thread per rank (MPICH Version: 5.0.2)'."""
        s = lambda n, w: f"{n} {w}{'' if n == 1 else 's'}"  # noqa: E731
        return (f"{s(self.size, 'rank')} on {s(self.nodes, 'node')}, "
                f"{s(self.threads, 'thread')} per rank ({self.library})")

    # -- agreement and failure ------------------------------------------------------------
    @contextmanager
    def agreed(self, what: str) -> Iterator[None]:
        """Run a block that every rank runs and that may fail on some ranks only (argument
        checks, data loading, reading a checkpoint): afterwards the ranks compare notes, and
        if any failed, every rank raises (its own exception, or DistributedError naming the
        failed rank), instead of some ranks waiting for the others forever."""
        agreement = Agreement(self, what)
        try:
            yield
        except BaseException as exc:
            agreement.failed(exc)
            raise
        agreement.reached()

    @contextmanager
    def abort_on_error(self, what: str = "training") -> Iterator[None]:
        """Run a block of collective work: if it raises on this rank, print which rank failed
        and why (with the traceback) and abort the whole MPI job, so that no rank waits for
        this one forever. With one rank the exception simply propagates."""
        try:
            yield
        except BaseException as exc:
            if self.size == 1:
                raise
            self.abort(exc, what)

    def abort(self, exc: BaseException, what: str = "training") -> None:
        """Report `exc` as this rank's failure and end the job (MPI_Abort, then exit)."""
        msg = "interrupted" if isinstance(exc, KeyboardInterrupt) else \
            f"{type(exc).__name__}: {exc}"
        line = (f"fastgru.distributed: rank {self.rank} of {self.size} ({self.host}) failed "
                f"during {what}: {msg}; aborting all ranks\n")
        try:
            sys.stdout.flush()
            tb = "" if isinstance(exc, KeyboardInterrupt) else "".join(
                traceback.format_exception(type(exc), exc, exc.__traceback__))
            sys.stderr.write(tb + line)  # the reason last, where it is seen
            sys.stderr.flush()
            time.sleep(ABORT_GRACE_SECONDS)  # let the launcher forward the message first
        finally:
            self.comm.Abort(1)
            # MPICH's MPI_Abort may return before the launcher kills the job: never go on
            os._exit(1)

    # -- small collectives ------------------------------------------------------------------
    def bcast(self, obj: Any, root: int = 0) -> Any:
        """A picklable object from `root` to every rank."""
        return obj if self.size == 1 else self.comm.bcast(obj, root=root)

    def allgather(self, obj: Any) -> list[Any]:
        return [obj] if self.size == 1 else self.comm.allgather(obj)

    def sum(self, values: Sequence[float] | np.ndarray) -> np.ndarray:
        """Elementwise float64 sum over ranks (counts, loss sums, metric totals)."""
        buf = np.array(values, np.float64)
        if self.size > 1:
            MPI = _mpi()
            self.comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        return buf


class Agreement:
    """A point that every rank must reach before collective work starts, when the code before
    it may fail on some ranks only: ranks that got there call reached(), a rank that failed
    on the way calls failed(exc) (from its exception handler, however far up the stack);
    both take part in the same allgather, so every rank learns who failed and none waits
    forever. reached() raises DistributedError naming the first rank that failed."""

    def __init__(self, ctx: Context, what: str = "before training") -> None:
        self.ctx, self.what, self.done = ctx, what, False

    def _exchange(self, note: str | None) -> list[Any]:
        self.done = True
        return self.ctx.allgather(note)

    def reached(self) -> None:
        if self.done:
            return
        for r, note in enumerate(self._exchange(None)):
            if note is not None:
                raise DistributedError(f"rank {r} failed {self.what}: {note}")

    def failed(self, exc: BaseException) -> None:
        """Tell the other ranks (no-op once the ranks have agreed)."""
        if not self.done:
            self._exchange(f"{type(exc).__name__}: {exc}")


_WORLD: list[Context] = []


def init(comm: Any = None, threads: int | None = None) -> Context:
    """Start MPI (if needed) and describe this rank; collective: call it on every rank.

    comm: an mpi4py communicator (default MPI.COMM_WORLD). threads: kernel/BLAS threads for
    this rank; default FASTGRU_NUM_THREADS or OMP_NUM_THREADS when set, else this rank's share
    of its node's physical cores (never more threads than cores, summed over the node's
    ranks). The result becomes the process-wide default (FASTGRU_NUM_THREADS is set when it
    was not, and BLAS is limited), so evaluate/predict after training do not oversubscribe
    either. The world context is created once and cached; MPIUnavailableError without
    mpi4py."""
    if comm is None and _WORLD and threads is None:
        return _WORLD[0]
    MPI = _mpi()
    world = comm is None
    comm = MPI.COMM_WORLD if world else comm
    rank, size = comm.Get_rank(), comm.Get_size()
    node = comm.Split_type(MPI.COMM_TYPE_SHARED, key=rank)
    try:
        local_rank, local_size = node.Get_rank(), node.Get_size()
        mine = core_ids()
        everyone = node.allgather(mine) if local_size > 1 else [mine]
    finally:
        node.Free()
    nodes = int(comm.allreduce(1 if local_rank == 0 else 0))
    if threads is None:
        threads = _env_threads() or share_of_cores(mine, everyone)
    threads = int(threads)
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    _apply_threads(threads)
    lib = MPI.Get_library_version().strip().splitlines()[0].strip()
    ctx = Context(comm=comm, rank=rank, size=size, local_rank=local_rank,
                  local_size=local_size, nodes=nodes, threads=threads,
                  host=MPI.Get_processor_name(), library=" ".join(lib.split()))
    if size > 1:
        _dump_stack_on_crash()
    if world:
        _WORLD[:] = [ctx]
    return ctx


def _dump_stack_on_crash() -> None:
    """Let a rank that crashes (SIGSEGV, SIGABRT, ...) print its Python stack before the
    launcher ends the job (faulthandler; not when stderr is no real file)."""
    import faulthandler

    if faulthandler.is_enabled():
        return
    try:
        faulthandler.enable()
    except (AttributeError, OSError, ValueError, RuntimeError):  # stderr without a fileno
        pass


def context(distributed: Any) -> Context:
    """A Context from fit's `distributed` argument: True (MPI.COMM_WORLD), a Context, or an
    mpi4py communicator."""
    if isinstance(distributed, Context):
        return distributed
    if distributed is True:
        return init()
    if hasattr(distributed, "Get_rank") and hasattr(distributed, "Allreduce"):
        return init(distributed)
    raise TypeError(f"distributed must be None, False, True, an mpi4py communicator or a "
                    f"fastgru.distributed.Context, got {distributed!r}")


# ------------------------------------------------------------------------------------------
# broadcasts


def bcast_arrays(ctx: Context, arrays: Mapping[str, np.ndarray] | None,
                 root: int = 0) -> dict[str, np.ndarray]:
    """{name: array} from `root` (arrays is ignored elsewhere) to every rank: names, shapes and
    dtypes go first (pickled), then one Bcast of a packed buffer per dtype."""
    spec = None
    if ctx.rank == root:
        assert arrays is not None
        spec = [(k, tuple(a.shape), np.dtype(a.dtype).str) for k, a in arrays.items()]
    spec = ctx.bcast(spec, root)
    out: dict[str, np.ndarray] = {}
    for dt in sorted({d for _, _, d in spec}):
        items = [(k, s) for k, s, d in spec if d == dt]
        buf = np.empty(sum(int(np.prod(s)) for _, s in items), np.dtype(dt))
        o = 0
        for k, s in items:
            n = int(np.prod(s))
            if ctx.rank == root:
                assert arrays is not None
                buf[o:o + n] = np.asarray(arrays[k]).reshape(-1)
            out[k] = buf[o:o + n].reshape(s)
            o += n
        if ctx.size > 1 and buf.size:
            ctx.comm.Bcast(buf, root=root)
    return out


def broadcast_parameters(model: Any, ctx: Context | None = None, root: int = 0) -> None:
    """Copy rank `root`'s parameters into every rank's model (in place; collective)."""
    ctx = ctx or init()
    got = bcast_arrays(ctx, model.parameters() if ctx.rank == root else None, root)
    if ctx.rank != root:
        for k, p in model.parameters().items():
            p[...] = got[k]


# ------------------------------------------------------------------------------------------
# the fused gradient allreduce


class GradientReducer:
    """Sums a model's gradients over the ranks with ONE in-place Allreduce per step.

    Buffer (the model's dtype, reused from step to step):
        [count, loss_sum | every dense gradient | the touched rows of each row-sparse
         gradient (rows x E), or the whole gradient and a row mask when rows are not given]
    Dense gradients are each recurrent layer's flat gradient buffer (one segment per layer)
    and the other layers' arrays. Each rank packs its gradients multiplied by its `count` (its
    number of loss terms: its gradients are those of a MEAN over them), so after the SUM and a
    division by the global count every rank holds the gradient of the mean over the global
    batch, however unequal the shards were. Counts are exact in float32 below 2**24.

    Custom loops:  reducer.clear(); model.zero_grad(); forward / loss / backward on this
    rank's shard; n, mean_loss = reducer.allreduce(count, loss * count, rows);
    model.optimizer.step(model._params, model._grads, reducer.rows)."""

    def __init__(self, model: Any, ctx: Context) -> None:
        model._need_built()
        self.ctx, self.model = ctx, model
        self.dtype = np.dtype(model.dtype)
        sparse = set(model.sparse_rows())
        self._dense: list[np.ndarray] = []
        self._sparse: list[tuple[str, np.ndarray]] = []
        for layer in model.layers:
            flat = getattr(getattr(layer, "layer", None), "flat_grads", None)
            if callable(flat):  # a recurrent layer: its gradients already live in one buffer
                self._dense.append(flat())
                continue
            for k, g in layer.grads().items():
                name = f"{layer.name}.{k}"
                if name in sparse:
                    self._sparse.append((name, g))
                else:
                    self._dense.append(g)
        covered = sum(g.size for g in self._dense) + sum(g.size for _, g in self._sparse)
        expected = sum(g.size for g in model.grads().values())
        if covered != expected:  # pragma: no cover - a layer whose grads the reducer misses
            raise RuntimeError(f"GradientReducer covers {covered} gradient values of "
                               f"{expected}")
        self.n_dense = int(sum(g.size for g in self._dense))
        self._buf = np.empty(2 + self.n_dense, self.dtype)
        #: rows of each row-sparse gradient after the last allreduce (for the optimizer)
        self.rows: dict[str, np.ndarray] = {}
        self._dirty: dict[str, np.ndarray] = {}
        self._sparse_grad = dict(self._sparse)
        self.calls = 0

    def _buffer(self, n: int) -> np.ndarray:
        if n > self._buf.size:
            self._buf = np.empty(max(n, int(self._buf.size * 1.5)), self.dtype)
        return self._buf[:n]

    def allreduce(self, count: float, loss_sum: float,
                  rows: Mapping[str, np.ndarray] | None = None) -> tuple[float, float]:
        """Replace this rank's gradients (of its mean loss over `count` terms) by the gradient
        of the mean loss over all ranks' terms; returns (global count, global mean loss).

        rows: for each row-sparse gradient (an Embedding's), the sorted unique rows touched
        on ANY rank (a superset of this rank's); then only those rows travel. Without them the
        whole gradient and a row mask travel. Afterwards `self.rows` holds the rows to update
        (the same on every rank) and clear() must run before the next backward."""
        rows = dict(rows or {})
        local = self.model.sparse_rows()
        plan: list[tuple[str, np.ndarray, np.ndarray | None]] = []
        used = 2 + self.n_dense
        for name, g in self._sparse:
            r = rows.get(name)
            if r is not None:
                r = np.asarray(r)
                mine = local.get(name)
                if mine is not None and mine.size and not np.all(np.isin(mine, r)):
                    raise ValueError(f"rows[{name!r}] must include every row this rank "
                                     "touched")
                used += r.size * g.shape[1]
            else:
                used += g.size + g.shape[0]
            plan.append((name, g, r))
        buf = self._buffer(used)
        c = self.dtype.type(count)
        buf[0], buf[1] = count, loss_sum
        o = 2
        for g in self._dense:
            np.multiply(g, c, out=buf[o:o + g.size].reshape(g.shape))
            o += g.size
        for name, g, r in plan:
            if r is not None:
                seg = buf[o:o + r.size * g.shape[1]].reshape(r.size, g.shape[1])
                np.take(g, r, axis=0, out=seg)
                seg *= c
                o += seg.size
            else:
                np.multiply(g, c, out=buf[o:o + g.size].reshape(g.shape))
                o += g.size
                mask = buf[o:o + g.shape[0]]
                mask[...] = 0
                mask[local.get(name, np.zeros(0, np.int64))] = 1
                o += g.shape[0]
        if self.ctx.size > 1:
            MPI = _mpi()
            self.ctx.comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        self.calls += 1
        n, total = float(buf[0]), float(buf[1])
        inv = self.dtype.type(1.0 / n if n > 0 else 0.0)
        o = 2
        for g in self._dense:
            np.multiply(buf[o:o + g.size].reshape(g.shape), inv, out=g)
            o += g.size
        self.rows, self._dirty = {}, {}
        for name, g, r in plan:
            if r is not None:
                seg = buf[o:o + r.size * g.shape[1]].reshape(r.size, g.shape[1])
                g[r] = seg * inv
                o += seg.size
            else:
                np.multiply(buf[o:o + g.size].reshape(g.shape), inv, out=g)
                o += g.size
                r = np.flatnonzero(buf[o:o + g.shape[0]] > 0)
                o += g.shape[0]
            self.rows[name] = r
            self._dirty[name] = r
        return n, (total / n if n > 0 else 0.0)

    def clear(self) -> None:
        """Zero the row-sparse gradient rows the last allreduce wrote (rows other ranks
        touched are unknown to the layer's own zero_grad)."""
        for name, r in self._dirty.items():
            self._sparse_grad[name][r] = 0
        self._dirty = {}


def touched_rows(model: Any, x: np.ndarray, lengths: np.ndarray | None) -> dict[str, np.ndarray]:
    """The Embedding rows that backward on token ids x (B, T) with lengths (B,) touches: the
    sorted unique valid, non-padding ids ({} when the model does not start with a sparse=True
    Embedding: a dense one's whole gradient travels). Given the GLOBAL batch, these are the
    rows any rank touches."""
    from fastgru.nn import Embedding, valid_mask

    first = model.layers[0]
    if not isinstance(first, Embedding) or not first.sparse:
        return {}
    mask = valid_mask(lengths, *x.shape[:2]) if x.ndim == 2 else None
    ids = x[mask] if mask is not None else x.reshape(-1)
    if first.padding_idx is not None:
        ids = ids[ids != first.padding_idx]
    return {f"{first.name}.weight": np.unique(ids)}


# ------------------------------------------------------------------------------------------
# what fit() / evaluate() use


def _digest(*arrays: Any) -> str:
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        if a is None:
            h.update(b"-")
            continue
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.data)
    return h.hexdigest()


class DataParallel:
    """The data-parallel side of fastgru.trainer.fit / evaluate (one per call)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.rank, self.size = ctx.rank, ctx.size
        self.reducer: GradientReducer | None = None
        self._warned = False

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    # -- batches ----------------------------------------------------------------------------
    def shard(self, idx: np.ndarray) -> np.ndarray:
        """This rank's samples of a global batch: positions rank, rank + W, ... (may be
        empty for a small last batch)."""
        return idx[self.rank::self.size]

    def dropout_rng(self, rng: np.random.Generator, epoch: int) -> np.random.Generator:
        """This rank's generator for dropout in `epoch`: derived from the training RNG's state
        (after the epoch's shuffle, without drawing from it), the rank and the epoch, so the
        shared shuffling stream stays the same on every rank and a resumed run draws the same
        masks."""
        state = repr(rng.bit_generator.state).encode()
        entropy = int.from_bytes(hashlib.sha256(state).digest()[:16], "little")
        return np.random.default_rng(np.random.SeedSequence(entropy,
                                                            spawn_key=(self.rank, epoch)))

    def touched_rows(self, model: Any, p: Any, gidx: np.ndarray) -> dict[str, np.ndarray]:
        """Embedding rows touched by the whole global batch `gidx` of prepared data `p` (the
        union over ranks, computed locally: every rank holds all the data)."""
        if p.lengths is None or not model.input_spec.integer:
            return {}
        L = p.lengths[gidx]
        return touched_rows(model, p.x[gidx, :int(L.max())], L)

    # -- start ------------------------------------------------------------------------------
    def setup(self, model: Any, p: Any, val: Any, settings: Mapping[str, Any],
              callbacks: Sequence[Any]) -> None:
        """Check that every rank runs the same training (data, options, model, callbacks) and
        create the gradient reducer; DistributedError on every rank when they differ."""
        model._need_built()
        mine = dict(settings)
        mine["training samples"] = len(p)
        mine["training data"] = _digest(p.x, p.lengths, p.y)
        mine["validation data"] = None if val is None else _digest(val.x, val.lengths, val.y)
        mine["sample weights"] = (None if p.sw is None else _digest(p.sw, None, None),
                                  None if val is None or val.sw is None
                                  else _digest(val.sw, None, None))
        mine["parameters"] = [(k, tuple(v.shape), str(v.dtype))
                              for k, v in model.parameters().items()]
        mine["optimizer"] = model.optimizer.get_config()
        mine["loss"] = model.loss.get_config()
        mine["metrics"] = [m.get_config() for m in model.metrics]
        mine["callbacks"] = [type(cb).__name__ for cb in callbacks]
        everyone = self.ctx.allgather(mine)
        for r, theirs in enumerate(everyone[1:], start=1):
            for key in mine:
                if theirs.get(key) != everyone[0].get(key):
                    raise DistributedError(
                        f"rank {r} differs from rank 0 in its {key}: every rank must run the "
                        f"same training on the same data (same files, options and seed); "
                        f"rank 0: {_short(everyone[0].get(key))}, rank {r}: "
                        f"{_short(theirs.get(key))}")
        self.reducer = GradientReducer(model, self.ctx)

    def sync_start(self, model: Any, callbacks: Sequence[Any], initial_epoch: int) -> int:
        """Broadcast rank 0's training state (parameters, optimizer state, training RNG,
        classes, callbacks' state, the epoch to start from) to every rank; returns the epoch."""
        root = self.is_root
        meta: Any = None
        arrays: dict[str, np.ndarray] | None = None
        if root:
            scalars, slots = model.optimizer.state_dict()
            states = [cb.get_state() for cb in callbacks]
            meta = {"epoch": int(initial_epoch), "rng": model.rng.bit_generator.state,
                    "optimizer": scalars, "classes": model.classes_,
                    "callbacks": [s for s, _ in states],
                    "stopped": bool(model.stop_training)}
            arrays = {f"param/{k}": v for k, v in model.parameters().items()}
            arrays.update({f"opt/{k}": v for k, v in slots.items()})
            for i, (_, a) in enumerate(states):
                arrays.update({f"callback/{i}/{k}": v for k, v in a.items()})
        meta = self.ctx.bcast(meta)
        got = bcast_arrays(self.ctx, arrays)
        if not root:
            for k, p in model.parameters().items():
                p[...] = got[f"param/{k}"]
            model.optimizer.load_state_dict(
                meta["optimizer"], {k[4:]: v for k, v in got.items() if k.startswith("opt/")},
                model.parameters())
            model.rng.bit_generator.state = meta["rng"]
            model.classes_ = meta["classes"]
            for i, cb in enumerate(callbacks):
                pre = f"callback/{i}/"
                cb.set_state(meta["callbacks"][i],
                             {k[len(pre):]: v.copy() for k, v in got.items()
                              if k.startswith(pre)})
            model.stop_training = meta["stopped"]  # a restored run that had already stopped
        return int(meta["epoch"])

    # -- steps and epochs -------------------------------------------------------------------
    def reduce_metrics(self, metrics: Sequence[Any], extra: Any = ()) -> np.ndarray:
        """Sum every metric's state (its totals and counts) over ranks (the metrics are updated
        in place) and the `extra` values (the loss terms) in the same Allreduce; returns those
        sums."""
        extra = np.asarray(extra, np.float64).ravel()
        states = [m.state() for m in metrics]
        s = np.asarray(self.ctx.sum(np.concatenate([extra, *states])), np.float64)
        k = len(extra)
        for m, st in zip(metrics, states, strict=True):
            m.set_state(s[k:k + st.size])
            k += st.size
        return s[:len(extra)]

    def stop_training(self, stop: bool) -> bool:
        """Rank 0's stop_training decision, on every rank."""
        return bool(self.ctx.bcast(bool(stop)))

    def check_parameters(self, model: Any) -> None:
        """Compare a digest of the parameters across ranks (they must be bitwise equal, as
        every rank applies the same update); if they drifted apart (nodes with different
        CPUs or libraries can round differently), copy rank 0's and warn once."""
        d = _digest(*model.parameters().values())
        if len(set(self.ctx.allgather(d))) > 1:
            broadcast_parameters(model, self.ctx)
            if self.is_root and not self._warned:
                print("fastgru.distributed: warning: the parameters differed between ranks "
                      "(different CPUs or libraries on the nodes?); copied rank 0's",
                      file=sys.stderr, flush=True)
            self._warned = True


def _short(v: Any, n: int = 120) -> str:
    s = repr(v)
    return s if len(s) <= n else s[:n - 3] + "..."


def is_rank0_only(cb: Any) -> bool:
    """Callbacks that write files run on rank 0 only: BackupAndRestore, ModelCheckpoint and
    any with `rank0_only = True`."""
    from fastgru.callbacks import BackupAndRestore, ModelCheckpoint

    flag = getattr(cb, "rank0_only", None)
    if flag is not None:
        return bool(flag)
    return isinstance(cb, (BackupAndRestore, ModelCheckpoint))


# ------------------------------------------------------------------------------------------
# entry points


def fit(model: Any, x: Any, y: Any = None, comm: Any = None, **kwargs: Any) -> Any:
    """Data-parallel model.fit over the ranks of `comm` (default MPI.COMM_WORLD): the same as
    model.fit(x, y, distributed=comm or True, **kwargs), batch_size per rank. Call it on
    every rank with the same data. Returns the History (the same on every rank)."""
    return model.fit(x, y, distributed=True if comm is None else comm, **kwargs)


def evaluate(model: Any, x: Any, y: Any = None, comm: Any = None, **kwargs: Any) -> Any:
    """model.evaluate with the samples split over the ranks and the sums reduced: every rank
    gets the result for the whole data."""
    return model.evaluate(x, y, distributed=True if comm is None else comm, **kwargs)
