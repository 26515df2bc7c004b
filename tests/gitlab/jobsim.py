"""Machinery shared by tests/gitlab and tests/snippets: results, the issuer client, shell
escaping the way GitLab Runner does it, running a job step in its own session, and the
checks that a finished job left nothing behind.

The test process makes itself a child subreaper (prctl PR_SET_CHILD_SUBREAPER), so every
process a job starts, including a daemon that detached into its own session, is re-parented
to it when its parent dies. "Nothing left running" is then exact: no live descendant of this
process. Leftovers are reported, then killed by PID.
"""
import ctypes
import hashlib
import json
import os
import select
import signal
import socket
import subprocess
import urllib.request
from collections import defaultdict

PR_SET_CHILD_SUBREAPER = 36


class Results:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, name, ok, detail=""):
        if ok:
            print(f"PASS: {name}", flush=True)
            self.passed += 1
        else:
            print(f"FAIL: {name}" + (f": {detail}" if detail else ""), flush=True)
            self.failed += 1
        return bool(ok)

    @staticmethod
    def note(msg):
        print(f"  {msg}", flush=True)


REAPED = {}


def _reap_all(_signum=None, _frame=None):
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        REAPED[pid] = os.waitstatus_to_exitcode(status)


def become_subreaper():
    """Adopt every orphan a job leaves, and reap it at once, as init would: a daemon that has
    exited must not linger as a zombie that still looks alive to `kill -0`."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
    signal.signal(signal.SIGCHLD, _reap_all)


def _status(p):
    # The SIGCHLD handler may have reaped the step before Popen.wait did.
    return REAPED.pop(p.pid, p.returncode)


class Issuer:
    """Client of agent/tests/peers/issuer.py (started by run.sh)."""

    def __init__(self, ready_line):
        self.url = json.loads(ready_line)["issuer"]

    def mint(self, platform, aud, ttl=900, claims=None):
        body = json.dumps({"platform": platform, "aud": aud, "ttl": ttl, "claims": claims or {}}).encode()
        req = urllib.request.Request(self.url + "/mint", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.load(r)["token"]


def shell_escape(s):
    """GitLab Runner's helpers.ShellEscape: a bash $'...' string."""
    out = ["$'"]
    for ch in s:
        if ch == "\\":
            out.append("\\\\")
        elif ch == "'":
            out.append("\\'")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append("\\x%02x" % ord(ch))
        else:
            out.append(ch)
    out.append("'")
    return "".join(out)


def sq(s):
    """POSIX single-quoting."""
    return "'" + s.replace("'", "'\"'\"'") + "'"


def sha256_file(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def run_capture(argv, env=None, cwd=None, input=None, timeout=180):
    """subprocess.run for use under the reaper: the exit status survives an early reap."""
    p = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = p.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        return 124, out, err + f"\n(killed after {timeout}s)"
    return _status(p), out, err


def _killpg(pid):
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_step(argv, env, cwd, log_path, timeout=180, ready_fifo=None):
    """Run one job step in a new session (like a runner, so the whole step can be killed as
    a process group). With ready_fifo: wait until the step writes "ready" to it, then SIGKILL
    the step's process group. Returns (status, killed, timed_out)."""
    with open(log_path, "ab") as log:
        p = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log,
                             stderr=subprocess.STDOUT, start_new_session=True)
    killed = timed_out = False
    if ready_fifo is None:
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _killpg(p.pid)
            p.wait()
        return _status(p), killed, timed_out
    fifo = os.open(ready_fifo, os.O_RDONLY | os.O_NONBLOCK)
    pidfd = os.pidfd_open(p.pid)
    poller = select.poll()
    poller.register(fifo, select.POLLIN)
    poller.register(pidfd, select.POLLIN)
    got = b""
    try:
        while True:
            events = poller.poll(timeout * 1000)
            if not events:
                timed_out = True
                break
            exited = False
            for fd, ev in events:
                if fd == fifo and ev & select.POLLIN:
                    got += os.read(fifo, 64)
                if fd == pidfd:
                    exited = True
            if b"ready" in got or exited:
                break
        if b"ready" in got or timed_out:
            _killpg(p.pid)
            killed = b"ready" in got
    finally:
        os.close(fifo)
        os.close(pidfd)
    p.wait()
    return _status(p), killed, timed_out


def reap():
    _reap_all()


def _proc_table():
    table = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        table[int(d)] = (int(fields[1]), fields[0])
    return table


def live_descendants():
    """PIDs of this process's live (non-zombie) descendants, after reaping zombies."""
    reap()
    kids = defaultdict(list)
    for pid, (ppid, state) in _proc_table().items():
        kids[ppid].append((pid, state))
    out, stack = [], [os.getpid()]
    while stack:
        for pid, state in kids[stack.pop()]:
            if state != "Z":
                out.append(pid)
            stack.append(pid)
    return out


def describe(pid):
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        exe = "?"
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        cmd = "?"
    return f"pid {pid} ({exe}): {cmd}"


def kill_leftovers(pids):
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    # Killed processes are, or become once their parent dies, children of this subreaper.
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def port_closed(port):
    try:
        with socket.create_connection(("127.0.0.1", int(port)), timeout=5):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return True


def read_facts(path):
    facts = {}
    try:
        with open(path) as f:
            for line in f:
                k, _, v = line.rstrip("\n").partition("=")
                facts[k] = v
    except OSError:
        pass
    return facts


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def file_text(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def check_clean(res, label, *, facts, log_paths, secrets, extra_absent=(), need_state=True):
    """After a job: nothing of lanyard's is left. Returns True when clean."""
    left = live_descendants()
    ok = res.check(f"{label}: no lanyard (or other) process left running", not left,
                   "; ".join(describe(p) for p in left))
    if left:
        kill_leftovers(left)
    ca, state, port = facts.get("ca"), facts.get("state"), facts.get("proxy_port")
    if need_state:
        ok &= res.check(f"{label}: the job saw a CA file and a state directory",
                        bool(ca) and bool(state), f"facts: {facts or 'none written'}")
    else:
        ok &= res.check(f"{label}: the job saw a CA file", bool(ca), f"facts: {facts or 'none written'}")
    if ca:
        ok &= res.check(f"{label}: CA file removed ({ca})", not os.path.exists(ca))
    if state:
        ok &= res.check(f"{label}: state directory removed ({state})", not os.path.exists(state))
    for path in extra_absent:
        ok &= res.check(f"{label}: {path} does not exist", not os.path.exists(path))
    if port and port.isdigit():
        ok &= res.check(f"{label}: proxy port {port} is closed", port_closed(port))
    text = "".join(file_text(p) for p in log_paths)
    leaked = [i for i, s in enumerate(secrets) if s and s in text]
    ok &= res.check(f"{label}: no identity token in the job's output", not leaked,
                    f"token #{leaked} appears in {', '.join(log_paths)}")
    return ok


def lanyard_has(bin_path, sub):
    """Does the binary know this subcommand? (For messages only; tests never skip on it.)"""
    return run_capture([bin_path, sub, "--help"])[0] == 0
