"""TensorFlow's side of a conversion, in a child process that imports TensorFlow while this one
imports torch and exports the model.

Importing TensorFlow and importing torch + exporting are each a few seconds of single-threaded
Python work; run one after the other they are the largest part of a conversion. :func:`tf_stages`
starts ``python -m converters.tf_worker`` first thing: the child imports TensorFlow on the other
core (MobileNetV1 1.0/224: TensorFlow ready 3 s sooner on the 2-core development machine) and
then serves the TF-side stages by name. Arguments and results (ONNX and .tflite bytes, arrays,
small dataclasses) are pickled over its stdin/stdout, arrays of 1 MB and more as .npy files in
/dev/shm; the TF graph it builds stays in the child. One worker serves every conversion of a
process. When TensorFlow is already imported in this process (a notebook, the tests), the same
stages run in-process instead (:class:`InProcessTF`).

Nothing outlives the parent: the child dies with it (PR_SET_PDEATHSIG when the main thread
started it, and a thread that watches the parent process id in any case), the child's temp
files go to a folder of the parent's that is removed when the worker stops, and the /dev/shm
folders are :class:`edgenet.scratch.ScratchDir` folders, which the next run removes if this
process is killed.
"""
from __future__ import annotations

import atexit
import os
import pickle
import shutil
import struct
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from edgenet.config import Precision
from edgenet.errors import ConversionError
from edgenet.scratch import ScratchDir, system_tempdir

_LENGTH = struct.Struct("<Q")


@dataclass(frozen=True)
class GraphInfo:
    """What the pipeline needs to know of the TF graph: its inputs and outputs, ops converted."""

    inputs: tuple[Any, ...]      # converters.onnx_to_tf.TensorInfo
    outputs: tuple[Any, ...]
    op_counts: dict[str, int]
    value_ops: dict[str, str] = None   # ONNX value name -> TF op name (TFGraph.value_ops)


class InProcessTF:
    """The TF-side stages, run in this process."""

    METHODS = ("ready", "onnx_to_tf", "float_tflite", "float_tflite_of", "layer_sqnr", "evaluate_values",
               "onnx_nodes", "graph_and_floats")

    def __init__(self) -> None:
        self._graph = None
        self._keep_layout: tuple[str, ...] = ()

    def ready(self) -> None:
        """Import TensorFlow (once)."""
        from edgenet._deps import import_tensorflow

        import_tensorflow()

    def onnx_to_tf(self, onnx_model, keep_layout: tuple[str, ...] = ()) -> GraphInfo:
        """Convert the (static-shaped) ONNX model; rank-4 inputs NHWC unless named in ``keep_layout``."""
        from edgenet.converters.onnx_to_tf import onnx_to_tf

        self._keep_layout = tuple(keep_layout)
        self._graph = onnx_to_tf(onnx_model, keep_layout=self._keep_layout)
        return GraphInfo(self._graph.inputs, self._graph.outputs, dict(self._graph.op_counts),
                         dict(self._graph.value_ops))

    def graph_and_floats(self, onnx_model, keep_layout: tuple[str, ...] = (), precisions=(Precision.FLOAT32,)):
        """:meth:`onnx_to_tf`, then :meth:`float_tflite` for each of ``precisions`` (float32, float16,
        dynamic): (GraphInfo, {precision: bytes}). One call, so that it can run while the caller
        loads the calibration data (:meth:`WorkerTF.start`)."""
        info = self.onnx_to_tf(onnx_model, keep_layout)
        return info, {Precision(p): self.float_tflite(Precision(p)) for p in precisions}

    def start(self, name: str, *args, **kwargs) -> "Pending":
        """Run stage ``name`` now; its result is :meth:`Pending.result` (in this process: already done)."""
        try:
            return Pending(value=getattr(self, name)(*args, **kwargs))
        except Exception as exc:
            return Pending(error=exc)

    def evaluate_values(self, onnx_model, feeds):
        """Every ONNX value the converted TF graph computes on ``feeds`` (ONNX layout), for the
        divergence locator."""
        from edgenet.converters.onnx_to_tf import evaluate_values

        return evaluate_values(onnx_model, feeds, keep_layout=self._keep_layout)

    def float_tflite(self, precision: Precision = Precision.FLOAT32) -> bytes:
        """The graph of the last :meth:`onnx_to_tf` as a .tflite with float activations: float32,
        float16 or dynamic (int8) weights."""
        from edgenet.converters.tflite import to_float_tflite

        return to_float_tflite(self._graph, precision)

    def float_tflite_of(self, onnx_model) -> bytes:
        """Another ONNX model (the equalized twin) straight to float32 .tflite."""
        from edgenet.converters.onnx_to_tf import onnx_to_tf
        from edgenet.converters.tflite import to_float_tflite

        return to_float_tflite(onnx_to_tf(onnx_model, keep_layout=self._keep_layout))

    def layer_sqnr(self, float_model: bytes, int8_model: bytes, samples):
        """Per-layer SQNR, each row named by the ONNX node (and torch module) that made it."""
        from edgenet.converters.layer_error import layer_sqnr, named_rows

        rows = layer_sqnr(float_model, int8_model, samples)
        return rows if self._graph is None else named_rows(rows, self.onnx_node)

    def onnx_node(self, tflite_name: str) -> str | None:
        """The ONNX node of the last converted graph that made the tensor ``tflite_name``."""
        return None if self._graph is None else self._graph.onnx_node(tflite_name)

    def onnx_nodes(self, tflite_names) -> dict:
        return {name: self.onnx_node(name) for name in tflite_names}

    def release(self, failed: bool = False) -> None:
        """The conversion is over: drop its graph."""
        self._graph = None

    close = release


class Pending:
    """A stage's result to come (:meth:`WorkerTF.start`), or one already there."""

    _UNSET = object()

    def __init__(self, value: Any = _UNSET, error: BaseException | None = None, receive=None) -> None:
        self._value, self._error, self._receive = value, error, receive

    def result(self) -> Any:
        if self._receive is not None:
            receive, self._receive = self._receive, None
            try:
                self._value = receive()
            except BaseException as exc:
                self._error = exc
        if self._error is not None:
            raise self._error
        return self._value


class WorkerTF:
    """The same stages, forwarded to a child process that starts importing TensorFlow at once."""

    def __init__(self) -> None:
        # the child's temp folder: it may outlive one CLI command's own temp folder (in a notebook)
        self._scratch = ScratchDir("edgenet-worker-", system_tempdir())
        self._log = tempfile.TemporaryFile()
        env = dict(os.environ)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        # the child must import this very copy of edgenet, whatever this process's sys.path is
        import edgenet

        root = str(Path(edgenet.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
        env["TMPDIR"] = str(self._scratch.path)
        env[_PARENT] = str(os.getpid())
        # PR_SET_PDEATHSIG fires when the *thread* that started the child ends: only the main one is safe
        env[_DEATH_SIGNAL] = "1" if threading.current_thread() is threading.main_thread() else "0"
        self._pending: Pending | None = None
        self._pending_folder = None
        try:
            self._proc = subprocess.Popen([sys.executable, "-m", "edgenet.converters.tf_worker"], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=self._log, env=env)
        except BaseException:
            self._log.close()
            self._scratch.close()
            raise

    def __getattr__(self, name: str):
        if name not in InProcessTF.METHODS:
            raise AttributeError(name)
        return lambda *args, **kwargs: self._call(name, args, kwargs)

    def _call(self, name: str, args: tuple, kwargs: dict) -> Any:
        return self.start(name, *args, **kwargs).result()

    def start(self, name: str, *args, **kwargs) -> "Pending":
        """Send stage ``name`` to the child and return at once: the child works on it while this
        process does something else (loads the calibration data, say); :meth:`Pending.result` waits
        for the reply. One call at a time: the next one waits for this result first."""
        if name not in InProcessTF.METHODS:
            raise AttributeError(name)
        if self._pending is not None:
            self._pending.result()
        folder = ScratchDir("edgenet-tf-", _array_dir(_large_bytes((args, kwargs))))
        try:
            shared = _ArrayFiles(folder.path)
            message = (name, shared.pack(args), shared.pack(kwargs))
            _send(self._proc.stdin, message)
        except OSError:  # the child is gone (broken pipe)
            folder.close()
            return Pending(error=self._stopped(name))
        except BaseException:
            folder.close()
            raise
        self._pending = Pending(receive=lambda: self._finish(name, folder))
        self._pending_folder = folder
        return self._pending

    def _finish(self, name: str, folder) -> Any:
        try:
            try:
                reply = _receive(self._proc.stdout)
            except OSError:
                reply = None
        finally:
            folder.close()
            self._pending = None
            self._pending_folder = None
        if reply is None:
            raise self._stopped(name)
        status, value, trace = reply
        if status == "error":
            value.add_note(f"in the TensorFlow worker process:\n{trace}")
            raise value
        return value

    def _stopped(self, name: str) -> ConversionError:
        return ConversionError(f"the TensorFlow worker process stopped during {name} ({self._last_log_line()}); "
                               "EDGENET_TF_WORKER=0 runs TensorFlow in this process instead")

    def _last_log_line(self) -> str:
        self._proc.poll()
        self._log.seek(0)
        lines = [ln for ln in self._log.read().decode("utf-8", "replace").splitlines() if ln.strip()]
        code = self._proc.returncode
        return (lines[-1][:200] if lines else "no output") + ("" if code is None else f"; exit code {code}")

    def alive(self) -> bool:
        return self._proc.poll() is None

    def release(self, failed: bool = False) -> None:
        """The conversion is over: keep the child (and its TensorFlow) for the next one in this
        process, unless the conversion failed, when it may be stopped mid-call."""
        if failed:
            self.close()

    def close(self) -> None:
        """Stop the child at once (nothing it could still be doing is wanted any more) and remove
        its temp folder."""
        if self._log.closed:
            return
        self._proc.kill()
        self._proc.wait()
        for stream in (self._proc.stdin, self._proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        if self._pending_folder is not None:     # a call still in flight: its arrays go too
            self._pending_folder.close()
            self._pending_folder = None
        self._pending = None
        self._log.close()
        self._scratch.close()


_shared: WorkerTF | None = None


def tf_stages(in_process: bool = False) -> InProcessTF | WorkerTF:
    """The TF-side stages: in a child process that is importing TensorFlow from now on, or in this
    process when TensorFlow is already here (or ``in_process``, or EDGENET_TF_WORKER=0).

    One worker serves every conversion of this process (a script converting ten models imports
    TensorFlow once); it stops when this process exits, or sees its stdin close when it dies.
    """
    global _shared
    if in_process or "tensorflow" in sys.modules or os.environ.get("EDGENET_TF_WORKER") == "0":
        return InProcessTF()
    if _shared is None or not _shared.alive():
        if _shared is not None:
            _shared.close()
        _shared = WorkerTF()
        atexit.register(_shared.close)
    return _shared


def shutdown() -> None:
    """Stop this process's worker now (a process about to leave through ``os._exit``, which
    skips atexit)."""
    if _shared is not None:
        _shared.close()


# -- the child's side: it must not outlive its parent ------------------------------------------
_PARENT = "EDGENET_TF_WORKER_PARENT"
_DEATH_SIGNAL = "EDGENET_TF_WORKER_PDEATHSIG"
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Make this (child) process end when its parent does, however the parent ends."""
    parent = int(os.environ.get(_PARENT, "0") or 0)
    if os.environ.get(_DEATH_SIGNAL) == "1" and sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if not parent:
        return
    if os.getppid() != parent:          # the parent is already gone
        os._exit(1)

    def watch() -> None:                # also covers a GIL-free wait, other OSes, other threads
        while os.getppid() == parent:
            time.sleep(0.25)
        os._exit(1)

    threading.Thread(target=watch, name="edgenet-parent-watch", daemon=True).start()


# -- the wire: length-prefixed pickles; large arrays as files in shared memory -----------------
_SHARED_DIR = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None   # tmpfs: no disk involved
_LARGE = 1 << 20   # bytes: a calibration set (120 MB at 224 px) costs 4x more through the pipe


def _large_bytes(obj: Any) -> int:
    import numpy as np

    if isinstance(obj, np.ndarray):
        return obj.nbytes if obj.nbytes >= _LARGE else 0
    if isinstance(obj, (list, tuple)):
        return sum(_large_bytes(x) for x in obj)
    if isinstance(obj, dict):
        return sum(_large_bytes(x) for x in obj.values())
    return 0


def _array_dir(need: int) -> str | None:
    """/dev/shm when it has room (a container's is often 64 MB), else the usual temp folder."""
    if _SHARED_DIR is None:
        return None
    try:
        return _SHARED_DIR if shutil.disk_usage(_SHARED_DIR).free > 2 * need + (16 << 20) else None
    except OSError:
        return None


@dataclass(frozen=True)
class _ArrayFile:
    path: str


class _ArrayFiles:
    """Replaces large numpy arrays (in nested tuples, lists and dicts) by .npy files in ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.count = folder, 0

    def pack(self, obj: Any) -> Any:
        import numpy as np

        if isinstance(obj, np.ndarray) and obj.nbytes >= _LARGE:
            self.count += 1
            path = self.folder / f"{self.count}.npy"
            np.save(path, obj, allow_pickle=False)
            return _ArrayFile(str(path))
        if isinstance(obj, (list, tuple)):
            return type(obj)(self.pack(x) for x in obj)
        if isinstance(obj, dict):
            return {k: self.pack(v) for k, v in obj.items()}
        return obj


def _unpack(obj: Any) -> Any:
    """The child's side of :class:`_ArrayFiles`: each file mapped read-only, not copied."""
    if isinstance(obj, _ArrayFile):
        import numpy as np

        return np.load(obj.path, mmap_mode="r", allow_pickle=False)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_unpack(x) for x in obj)
    if isinstance(obj, dict):
        return {k: _unpack(v) for k, v in obj.items()}
    return obj


def _send(stream: BinaryIO, message: Any) -> None:
    blob = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_LENGTH.pack(len(blob)))
    stream.write(blob)
    stream.flush()


def _receive(stream: BinaryIO) -> Any:
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    (size,) = _LENGTH.unpack(head)
    blob = stream.read(size)
    return pickle.loads(blob) if len(blob) == size else None


def _picklable(exc: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return ConversionError(f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}")


def serve() -> None:
    """The child's loop: import TensorFlow, then answer calls until the parent closes stdin."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C reaches the whole group: the parent decides
    requests = sys.stdin.buffer
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)                 # anything printed lands in the parent's log, not in the replies
    sys.stdout = sys.stderr
    stages, failure = InProcessTF(), None
    try:
        stages.ready()
    except Exception as exc:     # e.g. TensorFlow not installed: the first call reports it
        failure = exc
    while True:
        message = _receive(requests)
        if message is None:
            return
        name, args, kwargs = message
        try:
            if failure is not None:
                raise failure
            if name not in InProcessTF.METHODS:
                raise ConversionError(f"the TensorFlow worker has no stage {name!r}")
            reply = ("ok", getattr(stages, name)(*_unpack(args), **_unpack(kwargs)), "")
        except Exception as exc:
            reply = ("error", _picklable(exc), traceback.format_exc())
        _send(replies, reply)


if __name__ == "__main__":
    # run the module's importable twin, so that what is pickled names edgenet.converters.tf_worker, not __main__
    from edgenet.converters.tf_worker import serve as _serve

    _serve()
