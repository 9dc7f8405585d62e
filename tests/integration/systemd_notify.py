#!/usr/bin/python3
"""systemd_notify.py - plays systemd's side of Type=notify for tensord.

    systemd_notify.py DAEMON [DAEMON-ARGS...]

Binds a datagram socket, starts DAEMON with NOTIFY_SOCKET pointing at it and --socket PATH in a
fresh directory (plus DAEMON-ARGS), and checks, as the service manager would:
  1. READY=1 arrives, sent by the daemon's own pid (NotifyAccess=main), and the daemon's socket
     accepts a connection once it has;
  2. STATUS= lines arrive (the daemon's figures);
  3. after SIGTERM, STOPPING=1 arrives, the daemon exits with status 0, and the socket file it
     bound is gone.
Prints what it received; exits 0 when every check held, 1 otherwise (with the daemon's stderr).
"""
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

TIMEOUT = 10.0  # seconds for each step; the daemon needs well under one


class Failed(Exception):
    pass


def receive(sock, want, got):
    """Reads datagrams until a line of one satisfies want(line) (a line equal to it, for a
    string), for at most TIMEOUT seconds; returns the sender's pid. got collects every
    datagram as (pid, lines)."""
    match = want if callable(want) else (lambda line: line == want)
    name = getattr(want, "__doc__", None) if callable(want) else want
    for pid, lines in got:
        if any(match(line) for line in lines):
            return pid
    deadline = time.monotonic() + TIMEOUT
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise Failed(f"no {name} within {TIMEOUT:.0f} s (received: {got})")
        r, _, _ = select.select([sock], [], [], left)
        if not r:
            continue
        data, anc, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(12))
        pid = None
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid, _, _ = struct.unpack("iII", payload[:12])
        lines = data.decode("utf-8", "replace").split("\n")
        got.append((pid, lines))
        if any(match(line) for line in lines):
            return pid


def is_status(line):
    """STATUS="""
    return line.startswith("STATUS=")


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    daemon, extra = argv[1], argv[2:]
    with tempfile.TemporaryDirectory(prefix="td-notify-") as tmp:
        notify_path = os.path.join(tmp, "notify")
        sock_path = os.path.join(tmp, "tensord.sock")
        log_path = os.path.join(tmp, "stderr")
        ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        ns.bind(notify_path)
        # The kernel attaches the sender's credentials, as it does for systemd.
        ns.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        env = dict(os.environ)
        for k in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "TENSORD_SOCKET",
                  "JOURNAL_STREAM"):
            env.pop(k, None)
        env["NOTIFY_SOCKET"] = notify_path
        cmd = [daemon, "--socket", sock_path] + extra
        got = []
        proc = None
        with open(log_path, "w+b") as log:
            try:
                proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL,
                                        stdout=log, stderr=log)
                pid = receive(ns, "READY=1", got)
                if pid != proc.pid:
                    raise Failed(f"READY=1 came from pid {pid}, not the daemon's {proc.pid}")
                print(f"ok: READY=1 from pid {pid}")
                # Ready means serving: the socket must take a connection now.
                c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                c.settimeout(TIMEOUT)
                c.connect(sock_path)
                c.close()
                print(f"ok: {sock_path} accepts connections")
                receive(ns, is_status, got)
                status = [f for _, fl in got for f in fl if is_status(f)]
                print(f"ok: {status[0]}")
                if proc.poll() is not None:
                    raise Failed(f"the daemon exited early with status {proc.returncode}")
                if any("STOPPING=1" in fl for _, fl in got):
                    raise Failed("STOPPING=1 before SIGTERM")
                proc.send_signal(signal.SIGTERM)
                pid = receive(ns, "STOPPING=1", got)
                if pid != proc.pid:
                    raise Failed(f"STOPPING=1 came from pid {pid}, not the daemon's {proc.pid}")
                print(f"ok: STOPPING=1 from pid {pid} after SIGTERM")
                try:
                    rc = proc.wait(TIMEOUT)
                except subprocess.TimeoutExpired:
                    raise Failed(f"the daemon did not exit within {TIMEOUT:.0f} s of SIGTERM")
                if rc != 0:
                    raise Failed(f"the daemon exited with status {rc}, expected 0")
                print("ok: exit status 0")
                if os.path.exists(sock_path):
                    raise Failed(f"{sock_path} is still there after the daemon exited")
                print("ok: the socket file is removed")
                order = [f for _, fl in got for f in fl if f in ("READY=1", "STOPPING=1")]
                if order != ["READY=1", "STOPPING=1"]:
                    raise Failed(f"expected READY=1 then STOPPING=1 once each, got {order}")
                return 0
            except (Failed, OSError) as e:
                print(f"FAIL: {e}")
                print(f"notifications: {got}")
                log.seek(0)
                print("daemon stderr:\n" + log.read().decode("utf-8", "replace"))
                return 1
            finally:
                if proc is not None and proc.poll() is None:
                    proc.kill()
                    proc.wait()



if __name__ == "__main__":
    sys.exit(main(sys.argv))
