"""The small Python programs ``edgenet bench --ssh`` runs with the device's own Python.

Each is passed as ``python -c SCRIPT ARG...`` (arguments quoted with ``shlex``), needs only the
standard library, and prints marker lines the local side looks for.

- :data:`PREFLIGHT`: can this Python import edgenet? (``EDGENET-OK version python``)
- :data:`UPLOAD`: a fresh ``edgenet-bench-*`` temp dir, filled from a tar stream on stdin; the dir
  is removed again if the stream breaks off.
- :data:`SUPERVISE`: runs the benchmark command as a child in its own process group and removes the
  temp dir when it ends. It watches its stdin, which the local ssh keeps open: when the connection
  goes away (local Ctrl-C, kill, network loss) stdin reaches EOF and the child's process group is
  terminated (SIGTERM, SIGKILL after 5 s) and the dir removed. SIGTERM/SIGHUP/SIGINT to the
  supervisor do the same. It prints ``EDGENET-PID n`` (the child) and ``EDGENET-CLEANED`` on stderr.
- :data:`STOP`: the explicit clean-up the local side runs after an interrupt: terminate that
  process group (only if /proc shows it is our benchmark) and remove the dir.
"""
from __future__ import annotations

PREFLIGHT = (
    "import sys\n"
    "try:\n"
    "    import edgenet\n"
    "except Exception as exc:\n"
    "    print('EDGENET-MISSING', type(exc).__name__, str(exc).splitlines()[0] if str(exc) else '')\n"
    "    sys.exit(3)\n"
    "print('EDGENET-OK', edgenet.__version__, sys.version.split()[0])\n"
)

UPLOAD = (
    "import shutil, sys, tarfile, tempfile\n"
    "d = tempfile.mkdtemp(prefix='edgenet-bench-')\n"
    "print(d, flush=True)\n"
    "try:\n"
    "    with tarfile.open(fileobj=sys.stdin.buffer, mode='r|') as t:\n"
    "        t.extractall(d, **({'filter': 'data'} if hasattr(tarfile, 'data_filter') else {}))\n"
    "except BaseException:\n"
    "    shutil.rmtree(d, ignore_errors=True)\n"
    "    raise\n"
    "print('EDGENET-UPLOADED', flush=True)\n"
)

SUPERVISE = (
    "import os, shutil, signal, subprocess, sys, threading\n"
    "d, argv = sys.argv[1], sys.argv[2:]\n"
    "child = None\n"
    "def stop(*_):\n"
    "    if child is not None and child.poll() is None:\n"
    "        try:\n"
    "            os.killpg(child.pid, signal.SIGTERM)\n"
    "            child.wait(5)\n"
    "        except subprocess.TimeoutExpired:\n"
    "            os.killpg(child.pid, signal.SIGKILL)\n"
    "            child.wait()\n"
    "        except OSError:\n"
    "            pass\n"
    "    shutil.rmtree(d, ignore_errors=True)\n"
    "    os._exit(130)\n"
    "for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):\n"
    "    signal.signal(s, stop)\n"
    "try:\n"
    "    child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)\n"
    "except OSError as exc:\n"
    "    shutil.rmtree(d, ignore_errors=True)\n"
    "    print(f'edgenet: error: cannot start {argv[0]}: {exc.strerror}', file=sys.stderr)\n"
    "    sys.exit(127)\n"
    "print('EDGENET-PID', child.pid, file=sys.stderr, flush=True)\n"
    "def watch():\n"
    "    try:\n"
    "        while os.read(0, 65536):\n"
    "            pass\n"
    "    except OSError:\n"
    "        pass\n"
    "    if child.poll() is None:\n"
    "        stop()\n"
    "threading.Thread(target=watch, daemon=True).start()\n"
    "code = child.wait()\n"
    "shutil.rmtree(d, ignore_errors=True)\n"
    "try:\n"
    "    print('EDGENET-CLEANED', file=sys.stderr, flush=True)\n"
    "except OSError:\n"
    "    pass\n"
    "os._exit(code if code >= 0 else 128 - code)\n"
)

STOP = (
    "import os, shutil, signal, sys, time\n"
    "d, pid = sys.argv[1], sys.argv[2]\n"
    "def ours(p):\n"
    "    try:\n"
    "        with open(f'/proc/{p}/cmdline', 'rb') as f:\n"
    "            return d.encode() in f.read()\n"
    "    except OSError:\n"
    "        return False\n"
    "if pid.isdigit() and ours(int(pid)):\n"
    "    p = int(pid)\n"
    "    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):\n"
    "        try:\n"
    "            os.killpg(p, sig)\n"
    "        except OSError:\n"
    "            break\n"
    "        end = time.monotonic() + wait\n"
    "        while time.monotonic() < end and ours(p):\n"
    "            time.sleep(0.05)\n"
    "        if not ours(p):\n"
    "            break\n"
    "if os.path.basename(d.rstrip('/')).startswith('edgenet-bench-'):\n"
    "    shutil.rmtree(d, ignore_errors=True)\n"
)
