"""In-sandbox bootstrap (runs INSIDE the sandbox, before any untrusted code).

This file is not imported by the host: its source is copied read-only into the sandbox and run
as ``python -I -S -B boot.py MODE CPU_S MEMORY_BYTES NPROC FSIZE_BYTES NOFILE CWD MAIN [ARG...]``
(plain argv, so the one-shot path never pays for importing ``json``/``re``). It applies the
resource limits, then either runs the program once (mode ``exec``) or serves a line-delimited
JSON protocol on its original stdin/stdout (modes ``call`` and ``stdio``) so that the trusted
host can call the program's functions or feed it test inputs. Everything that leaves the sandbox
is plain data; the host re-validates it, so nothing here needs to be tamper-proof. Kept
compatible with Python 3.8+ (the sandbox interpreter may differ from the host's).
"""

import builtins
import io
import os
import resource
import sys
import types

_os_write = os.write
_os_exit = os._exit


def _set_limits(cpu_s, memory_bytes, nproc, fsize_bytes, nofile):
    """Lower the resource limits (hard limits too, so the program cannot raise them again)."""
    table = [
        (resource.RLIMIT_CPU, cpu_s, cpu_s + 1),
        (resource.RLIMIT_AS, memory_bytes, memory_bytes),
        (resource.RLIMIT_NPROC, nproc, nproc),
        (resource.RLIMIT_FSIZE, fsize_bytes, fsize_bytes),
        (resource.RLIMIT_NOFILE, nofile, nofile),
        (resource.RLIMIT_CORE, 0, 0),
        (resource.RLIMIT_MEMLOCK, 0, 0),
    ]
    for res, soft, hard in table:
        cur_soft, cur_hard = resource.getrlimit(res)
        if cur_hard != resource.RLIM_INFINITY:
            hard = min(hard, cur_hard)
            soft = min(soft, hard)
        resource.setrlimit(res, (soft, hard))  # failure aborts: never run without limits


def _define_exit_builtins():
    """``-S`` skips ``site``; provide the ``exit``/``quit`` builtins that programs commonly use."""

    class _Quitter(object):
        def __init__(self, name):
            self.name = name

        def __repr__(self):
            return "Use %s() or Ctrl-D (i.e. EOF) to exit" % self.name

        def __call__(self, code=None):
            raise SystemExit(code)

    builtins.exit = _Quitter("exit")
    builtins.quit = _Quitter("quit")


def _exit_code(exc):
    """Map a SystemExit to a process exit status like the interpreter does."""
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    try:
        sys.stderr.write(str(code) + "\n")
    except Exception:
        pass
    return 1


def _flush():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass


def _run_main(src, path, argv):
    """Run ``src`` as ``__main__`` in this process and return an exit status."""
    main = types.ModuleType("__main__")
    main.__file__ = path
    main.__builtins__ = builtins
    sys.modules["__main__"] = main
    sys.argv = [path] + list(argv)
    try:
        code = src if isinstance(src, types.CodeType) else compile(src, path, "exec")
        exec(code, main.__dict__)
        status = 0
    except SystemExit as e:
        status = _exit_code(e)
    except MemoryError:
        _flush()
        _os_write(2, b"\nMemoryError\n")
        status = 1
    except BaseException:
        try:
            import traceback

            traceback.print_exc()
        except BaseException:
            _os_write(2, b"\nuncaught exception\n")
        status = 1
    _flush()
    return status


# ---------------------------------------------------------------- plain-data codec (sandbox side)

_MAX_DEPTH = 100
_ITER_TYPES = (types.GeneratorType, map, filter, zip, enumerate, reversed, type(iter([])),
               type(iter(())), type(iter("")), type(iter(range(0))))


class _Objects(object):
    """Non-plain return values stay in here; the host only gets an opaque handle id."""

    def __init__(self):
        self.table = {}

    def put(self, obj):
        key = len(self.table) + 1
        self.table[key] = obj
        return key


def _enc(x, objs, depth=0):
    """Encode a result. Subclasses of plain types are sent as their plain value (safe: the host
    rebuilds and compares fresh objects, so a custom ``__eq__`` never reaches it)."""
    if depth > _MAX_DEPTH:
        raise ValueError("value nested too deeply")
    t = type(x)
    if x is None or t is bool or t is str or t is float:
        return x
    if t is int:
        return x if -(2 ** 53) < x < 2 ** 53 else {"I": hex(x)}
    d = depth + 1
    if t is list:
        return [_enc(i, objs, d) for i in x]
    if t is tuple:
        return {"t": [_enc(i, objs, d) for i in x]}
    if t is dict:
        return {"d": [[_enc(k, objs, d), _enc(v, objs, d)] for k, v in x.items()]}
    if t is set:
        return {"s": [_enc(i, objs, d) for i in x]}
    if t is frozenset:
        return {"f": [_enc(i, objs, d) for i in x]}
    if t is complex:
        return {"c": [x.real, x.imag]}
    if t is bytes:
        import base64

        return {"b": base64.b64encode(x).decode("ascii")}
    if t is range:
        return {"r": [x.start, x.stop, x.step]}
    if isinstance(x, _ITER_TYPES):
        return {"it": [_enc(i, objs, d) for i in x]}
    # subclasses (Counter, OrderedDict, defaultdict, namedtuple, IntEnum, str enums...)
    for base in (bool, int, float, str, complex, bytes):
        if isinstance(x, base):
            return _enc(base(x), objs, d)
    for base in (dict, tuple, list, set, frozenset):
        if isinstance(x, base):
            if base is dict:
                return _enc(dict(dict.items(x)), objs, d)
            return _enc(base(base.__iter__(x)), objs, d)
    return {"h": objs.put(x), "type": t.__name__[:80]}


def _dec(x, objs, depth=0):
    if depth > _MAX_DEPTH:
        raise ValueError("value nested too deeply")
    if isinstance(x, list):
        return [_dec(i, objs, depth + 1) for i in x]
    if not isinstance(x, dict):
        return x
    (tag, v), = x.items()
    d = depth + 1
    if tag == "I":
        return int(v, 16)
    if tag == "t":
        return tuple(_dec(i, objs, d) for i in v)
    if tag == "s":
        return set(_dec(i, objs, d) for i in v)
    if tag == "f":
        return frozenset(_dec(i, objs, d) for i in v)
    if tag == "c":
        return complex(v[0], v[1])
    if tag == "d":
        return dict((_dec(k, objs, d), _dec(w, objs, d)) for k, w in v)
    if tag == "b":
        import base64

        return base64.b64decode(v)
    if tag == "r":
        return range(*v)
    if tag == "it":
        return iter([_dec(i, objs, d) for i in v])
    if tag == "h":
        return objs.table[v]
    raise ValueError("unknown tag %r" % tag)


# ---------------------------------------------------------------- protocol modes


class _Proto(object):
    """Private copies of the original stdin/stdout; fds 0/1 are pointed at /dev/null."""

    def __init__(self):
        import json

        self.json = json
        self.rfile = os.fdopen(os.dup(0), "rb")
        self.wfd = os.dup(1)
        null = os.open("/dev/null", os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)
        os.close(null)
        sys.stdin = io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "r", closefd=False)))
        sys.stdout = io.TextIOWrapper(io.BufferedWriter(io.FileIO(1, "w", closefd=False)),
                                      line_buffering=True)

    def read(self):
        line = self.rfile.readline()
        if not line:
            _os_exit(0)
        return self.json.loads(line.decode("utf-8"))

    def send(self, obj):
        data = (self.json.dumps(obj, separators=(",", ":")) + "\n").encode("utf-8")
        view = memoryview(data)
        while view:
            n = _os_write(self.wfd, view)
            view = view[n:]


def _exc_info(e):
    return {"ok": False, "exc": type(e).__name__[:80], "msg": str(e)[:500]}


def _compile(src, filename, hello):
    """The program's code object, or None with ``hello["syntax_error"]`` set."""
    try:
        return compile(src, filename, "exec")
    except (SyntaxError, ValueError) as e:
        hello["syntax_error"] = ("%s: %s" % (type(e).__name__, e))[:500]
        return None


def _serve_call(cfg, src, proto):
    """Load the program as a module, then answer ``call`` requests with plain-data results."""
    mod = types.ModuleType(cfg.get("module_name", "solution"))
    mod.__builtins__ = builtins
    mod.__file__ = cfg["main"]
    sys.modules[mod.__name__] = mod
    hello = {"ready": True}
    code = _compile(src, cfg["main"], hello)
    if code is not None:
        try:
            exec(code, mod.__dict__)
        except SystemExit:
            pass
        except BaseException as e:
            hello["load_error"] = ("%s: %s" % (type(e).__name__, e))[:500]
    _flush()
    proto.send(hello)
    objs = _Objects()
    while True:
        req = proto.read()
        try:
            fn = _resolve(mod, req["fn"])
            args = _dec(req.get("args", []), objs)
            kwargs = _dec(req.get("kwargs", {"d": []}), objs)
            value = fn(*args, **kwargs)
            out = {"ok": True, "v": _enc(value, objs)}
        except SystemExit as e:
            out = {"ok": False, "exc": "SystemExit", "msg": str(e.code)[:200]}
        except BaseException as e:
            out = _exc_info(e)
        _flush()
        try:
            proto.send(out)
        except (TypeError, ValueError) as e:  # unencodable (e.g. a tampered result)
            proto.send(_exc_info(e))


def _resolve(mod, name):
    """A top-level callable, else a method of a LeetCode-style ``Solution`` class."""
    ns = mod.__dict__
    if name in ns and callable(ns[name]):
        return ns[name]
    sol = ns.get("Solution")
    if isinstance(sol, type) and hasattr(sol, name):
        return getattr(sol(), name)
    raise NameError("name %r is not defined" % name)


def _serve_stdio(cfg, src, proto):
    """Answer ``stdio`` requests: run the program in a forked child on the given stdin."""
    hello = {"ready": True}
    code = _compile(src, cfg["main"], hello)
    proto.send(hello)
    work = os.path.join(cfg["cwd"], ".run")
    os.makedirs(work, exist_ok=True)
    cap = int(cfg.get("max_output", 1 << 20))
    while True:
        req = proto.read()
        if code is None:
            proto.send({"exit": 1, "stdout": "", "stderr": hello["syntax_error"]})
            continue
        paths = [os.path.join(work, n) for n in ("in", "out", "err")]
        with open(paths[0], "wb") as f:
            f.write(req.get("stdin", "").encode("utf-8"))
        pid = os.fork()
        if pid == 0:
            proto.rfile.close()
            os.close(proto.wfd)
            _child_stdio(code, cfg, paths)
        _, status = os.waitpid(pid, 0)
        try:
            os.killpg(pid, 9)  # leftovers the program started
        except OSError:
            pass
        exit_code = os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode") \
            else (-(status & 0x7F) if status & 0x7F else status >> 8)
        with open(paths[1], "rb") as f:
            out = f.read(cap + 1)
        with open(paths[2], "rb") as f:
            err = f.read(4096)
        proto.send({"exit": exit_code, "stdout": out[:cap].decode("utf-8", "replace"),
                    "truncated": len(out) > cap, "stderr": err.decode("utf-8", "replace")})


def _child_stdio(code, cfg, paths):
    try:
        os.setpgid(0, 0)
        fin = os.open(paths[0], os.O_RDONLY)
        fout = os.open(paths[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        ferr = os.open(paths[2], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        for fd, target in ((fin, 0), (fout, 1), (ferr, 2)):
            os.dup2(fd, target)
            os.close(fd)
        sys.stdin = io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "r", closefd=False)),
                                     encoding="utf-8", errors="surrogateescape")
        sys.stdout = io.TextIOWrapper(io.BufferedWriter(io.FileIO(1, "w", closefd=False)),
                                      encoding="utf-8", errors="backslashreplace")
        sys.stderr = io.TextIOWrapper(io.BufferedWriter(io.FileIO(2, "w", closefd=False)),
                                      encoding="utf-8", errors="backslashreplace",
                                      line_buffering=True)
        status = _run_main(code, cfg["main"], [])
    except BaseException:
        status = 1
    _flush()
    _os_exit(status)


def main():
    mode, cpu_s, memory_bytes, nproc, fsize_bytes, nofile, cwd, path = sys.argv[1:9]
    _set_limits(int(cpu_s), int(memory_bytes), int(nproc), int(fsize_bytes), int(nofile))
    _define_exit_builtins()
    sys.path.insert(0, cwd)
    sys.dont_write_bytecode = True
    with open(path, "r", encoding="utf-8", errors="surrogateescape") as f:
        src = f.read()
    if mode == "exec":
        _os_exit(_run_main(src, path, sys.argv[9:]))
    cfg = {"cwd": cwd, "main": path}
    for item in sys.argv[9:]:
        key, _, value = item.partition("=")
        cfg[key] = value
    proto = _Proto()
    proto.send({"hello": True})
    if mode == "call":
        _serve_call(cfg, src, proto)
    elif mode == "stdio":
        _serve_stdio(cfg, src, proto)
    _os_exit(2)


if __name__ == "__main__":
    main()
