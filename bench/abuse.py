#!/usr/bin/env python3
"""Attacks a release server as the abuse issue measured them, and prints what it held.

Usage: bench/abuse.py BINARY   (starts BINARY serve on free loopback ports, SQLite in a temp dir)
Every loop is bounded in count and time and targets only 127.0.0.1.
"""
import http.client, json, os, socket, subprocess, sys, tempfile, threading, time, urllib.request

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def rss_mb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0

def start(binary, extra=()):
    tcp, http = free_port(), free_port()
    data = tempfile.mkdtemp()
    p = subprocess.Popen([binary, "serve", "--tcp", f"127.0.0.1:{tcp}", "--udp", f"127.0.0.1:{tcp}",
                          "--http", f"127.0.0.1:{http}", "--data-dir", data, "--log", "error", *extra],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", http), 0.2).close(); break
        except OSError:
            time.sleep(0.05)
    return p, tcp, http

def post(port, room, text, source="127.0.0.1", timeout=5):
    """POSTs from `source` (another loopback address is another anonymous identity)."""
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout, source_address=(source, 0))
        c.request("POST", f"/rooms/{room}/messages", body=text.encode())
        status = c.getresponse().status
        c.close()
        return status
    except OSError:
        return 0

def history(binary):
    p, tcp, http = start(binary, ["--publish-rate", "0"])
    big = "x" * 16 * 1024
    for i in range(300):
        post(http, "big", f"{i} {big}")
    before = rss_mb(p.pid)
    socks = []
    for _ in range(2):
        s = socket.create_connection(("127.0.0.1", tcp)); s.sendall(b"/join big\n" + b"/history 1000\n" * 128)
        socks.append(s)
    time.sleep(4)
    after = rss_mb(p.pid)
    p.kill(); p.wait()
    return f"/history amplification: RSS {before:.0f} -> {after:.0f} MB"

def udp(binary):
    p, tcp, http = start(binary)
    for i in range(50):
        post(http, "lobby", f"{i} " + "y" * 1000)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.3)
    request = b"/history 1000".ljust(65)
    s.sendto(request, ("127.0.0.1", tcp))
    got = 0
    deadline = time.time() + 2
    while time.time() < deadline:
        try:
            got += len(s.recv(70000))
        except socket.timeout:
            break
    p.kill(); p.wait()
    return f"UDP reflection: {len(request)} bytes in, {got} bytes out ({got / len(request):.1f}x)"

def slowloris(binary):
    p, tcp, http = start(binary)
    before = rss_mb(p.pid)
    held = []
    for _ in range(2500):
        try:
            s = socket.create_connection(("127.0.0.1", http), 1); s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n"); held.append(s)
        except OSError:
            pass
    peak = rss_mb(p.pid)
    time.sleep(12)
    open_, refused, closed = 0, 0, 0
    for s in held:
        s.setblocking(False)
        try:
            data = s.recv(4096)
            if data.startswith(b"HTTP/1.1 503"):
                refused += 1
            elif data == b"":
                closed += 1
            else:
                open_ += 1
        except BlockingIOError:
            open_ += 1
        except OSError:
            closed += 1
    after = rss_mb(p.pid)
    p.kill(); p.wait()
    return (f"slowloris: 2500 stalled connections: {refused} refused with 503, {closed} closed, "
            f"{open_} still open after 12 s; RSS {before:.0f} -> {peak:.0f} (all held) -> {after:.0f} MB")

def flood(binary):
    p, tcp, http = start(binary)
    stop = time.time() + 3
    s = socket.create_connection(("127.0.0.1", tcp))
    def blast():
        line = b"spam\n" * 2000
        try:
            while time.time() < stop:
                s.sendall(line)
        except OSError:
            pass
    t = threading.Thread(target=blast); t.start()
    codes = []
    while time.time() < stop:
        codes.append(post(http, "other", "probe", source="127.0.0.2"))
        time.sleep(0.1)
    t.join()
    last = json.load(urllib.request.urlopen(f"http://127.0.0.1:{http}/rooms/lobby/messages?last=1", timeout=5))
    stored = last["messages"][-1]["id"].split("-")[1] if last["messages"] else "0"
    p.kill(); p.wait()
    bad = sum(1 for c in codes if c != 201)
    return f"TCP publish flood 3 s: {stored} stored; probe publishes in another room failed {bad} of {len(codes)}"

if __name__ == "__main__":
    binary = sys.argv[1]
    for case in (history, udp, slowloris, flood):
        print(case(binary), flush=True)
