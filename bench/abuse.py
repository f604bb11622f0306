#!/usr/bin/env python3
"""Attacks a release server as the abuse issue measured them, and prints what it held.

Usage: bench/abuse.py BINARY [CASE ...]   (starts BINARY serve on free loopback ports, SQLite in a
temp dir; every case when none is named: history udp slowloris flood wildcards guesses wills
h2window grpcwindow idle; those two need the `h2` package)
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

MQTT = {}

def start(binary, extra=()):
    tcp, http, mqtt = free_port(), free_port(), free_port()
    MQTT["port"] = mqtt
    data = tempfile.mkdtemp()
    p = subprocess.Popen([binary, "serve", "--tcp", f"127.0.0.1:{tcp}", "--udp", f"127.0.0.1:{tcp}",
                          "--http", f"127.0.0.1:{http}", "--mqtt", f"127.0.0.1:{mqtt}",
                          *([] if "--grpc" in extra else ["--grpc", "off"]), "--data-dir", data, "--log", "error", *extra],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    grpc = [int(a.rsplit(":", 1)[1]) for k, a in zip(extra, extra[1:]) if k == "--grpc"]
    for port in [http, tcp, mqtt, *grpc]:
        wait_for(port)
    return p, tcp, http

def wait_for(port):
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close(); return
        except OSError:
            time.sleep(0.05)

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

def mqtt_packet(kind, body):
    n, length = len(body), b""
    while True:
        b, n = n % 128, n // 128
        length += bytes([b | (0x80 if n else 0)])
        if not n:
            return bytes([kind]) + length + body

def mqtt_str(text):
    raw = text.encode() if isinstance(text, str) else text
    return len(raw).to_bytes(2, "big") + raw

def mqtt_connect(source, client_id, will=None):
    s = socket.create_connection(("127.0.0.1", MQTT["port"]), 5, source_address=(source, 0))
    flags = 0x02 | (0x04 if will else 0)
    body = mqtt_str("MQTT") + bytes([4, flags]) + (60).to_bytes(2, "big") + mqtt_str(client_id)
    if will:
        body += mqtt_str(will[0]) + mqtt_str(will[1])
    s.sendall(mqtt_packet(0x10, body))
    return s

class Probe:
    """An SSE reader in room `probe` and a POST to it every 50 ms from 127.0.0.2: the longest
    wait for a POST's answer and the longest gap between deliveries, over a window."""
    def __init__(self, http):
        self.http, self.stop, self.seen, self.waits = http, False, [], []
        self.reader = threading.Thread(target=self.read, daemon=True); self.reader.start()
        time.sleep(0.3)
        self.poster = threading.Thread(target=self.post, daemon=True); self.poster.start()
    def read(self):
        r = urllib.request.urlopen(f"http://127.0.0.1:{self.http}/events?room=probe", timeout=120)
        while not self.stop:
            line = r.readline()
            if not line:
                break
            if line.startswith(b"event: message"):
                self.seen.append(time.time())
    def post(self):
        while not self.stop:
            self.started = time.time()
            post(self.http, "probe", "probe", source="127.0.0.2", timeout=60)
            self.waits.append(time.time() - self.started)
            self.started = None
            time.sleep(0.05)
    def worst(self, since):
        """The longest time without a delivery from `since` to now, the slowest POST (one still
        waiting counts as far as it got), and how many were delivered."""
        self.stop, end = True, time.time()
        seen = [since] + [t for t in self.seen if t >= since] + [end]
        gap = max(b - a for a, b in zip(seen, seen[1:]))
        waiting = [end - self.started] if getattr(self, "started", None) else []
        return gap, max(self.waits + waiting, default=0.0), len(seen) - 2

def wildcards(binary):
    """300 rooms, 1,000 MQTT connections from five addresses subscribed to x/#, closed at once."""
    p, tcp, http = start(binary, ["--publish-rate", "0"])
    # Anonymous clients may each make 100 rooms: these come from four addresses.
    made = sum(post(http, f"x%2F{i}", "made", source=f"127.0.1.{1 + i // 90}") == 201 for i in range(300))
    subs, granted = [], 0
    for i in range(1000):
        s = mqtt_connect(f"127.0.2.{1 + i // 200}", f"w{i}")
        s.sendall(mqtt_packet(0x82, (1).to_bytes(2, "big") + mqtt_str("x/#") + b"\x00"))
        subs.append(s)
    for s in subs:
        acks = b""
        s.settimeout(5)
        while len(acks) < 9:
            acks += s.recv(9 - len(acks))
        granted += acks[8] == 0
    rss = rss_mb(p.pid)
    probe = Probe(http)
    time.sleep(2)
    closed = time.time()
    for s in subs:
        s.close()
    time.sleep(40)
    gap, wait, seen = probe.worst(closed)
    p.kill(); p.wait()
    return (f"1,000 x/# subscribers over {made} rooms ({granted} granted, RSS {rss:.0f} MB) closed at once: "
            f"probe's longest gap between deliveries {gap:.2f} s, slowest POST {wait:.2f} s, {seen} delivered in 40 s")

def guesses(binary):
    """3,000 wrong API keys from one address on one keep-alive connection."""
    p, tcp, port = start(binary, ["--api-key", "k" * 32])
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    codes, t = {}, time.time()
    for i in range(3000):
        c.request("GET", "/admin/connections", headers={"X-API-Key": f"guess{i:027d}"})
        r = c.getresponse(); r.read()
        codes[r.status] = codes.get(r.status, 0) + 1
    took = time.time() - t
    p.kill(); p.wait()
    return f"3,000 wrong API keys in {took:.2f} s: " + ", ".join(f"{n}x {code}" for code, n in sorted(codes.items()))

def wills(binary):
    """5 s of connections from one address, each with a 64 KB will, dropped without DISCONNECT."""
    p, tcp, http = start(binary)
    before = rss_mb(p.pid)
    stop, made = time.time() + 5, 0
    while time.time() < stop:
        try:
            s = mqtt_connect("127.0.0.1", f"will{made}", ("wills", b"w" * 64000))
            s.recv(4)
            s.close()
        except OSError:
            pass
        made += 1
    time.sleep(1)
    last = json.load(urllib.request.urlopen(f"http://127.0.0.1:{http}/rooms/wills/messages?last=1", timeout=5))
    stored = last["messages"][-1]["id"].split("-")[1] if last.get("messages") else "0"
    after = rss_mb(p.pid)
    p.kill(); p.wait()
    return f"{made} connections with 64 KB wills in 5 s: {stored} wills published; RSS {before:.0f} -> {after:.0f} MB"

def h2window(binary, grpc=False):
    """h2c connections granting no window, each asking 128 pages of 1 MiB (needs `pip install h2`);
    with `grpc`, the same as gRPC History calls on the gRPC listener."""
    try:
        import h2.config, h2.connection, h2.events, h2.settings
    except ImportError:
        return "h2window: skipped (pip install h2)"
    grpc_port = free_port()
    p, tcp, port = start(binary, ["--publish-rate", "0", "--grpc", f"127.0.0.1:{grpc_port}"])
    for i in range(16):
        post(port, "big", f"{i} " + "b" * 64000)
    before = rss_mb(p.pid)
    held = []
    request = b"\x0a\x03big\x18\xe8\x07"  # HistoryRequest { room: "big", limit: 1000 }
    for n in range(10):
        s = socket.create_connection(("127.0.0.1", grpc_port if grpc else port), 5)
        c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        c.local_settings = h2.settings.Settings(client=True, initial_values={
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
        c.initiate_connection()
        for k in range(128):
            sid = c.get_next_available_stream_id()
            if grpc:
                c.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":authority", f"127.0.0.1:{grpc_port}"),
                                     (":path", "/switchboard.v1.Switchboard/History"),
                                     ("content-type", "application/grpc"), ("te", "trailers")])
                c.send_data(sid, b"\x00" + len(request).to_bytes(4, "big") + request, end_stream=True)
            else:
                c.send_headers(sid, [(":method", "GET"), (":scheme", "http"), (":authority", f"127.0.0.1:{port}"),
                                     (":path", "/rooms/big/messages?limit=1000")], end_stream=True)
        s.sendall(c.data_to_send())
        held.append((s, c))
    statuses = {}
    deadline = time.time() + 8
    while time.time() < deadline:
        for s, c in held:
            s.settimeout(0.05)
            try:
                data = s.recv(65536)
            except (socket.timeout, BlockingIOError):
                continue
            except OSError:
                continue
            if not data:
                continue
            for e in c.receive_data(data):
                if isinstance(e, h2.events.ResponseReceived):
                    code = dict(e.headers).get(b":status", b"?").decode()
                    statuses[code] = statuses.get(code, 0) + 1
            out = c.data_to_send()  # PING answers and SETTINGS acks, never a WINDOW_UPDATE
            if out:
                s.sendall(out)
    after = rss_mb(p.pid)
    p.kill(); p.wait()
    what = "gRPC History(limit=1000) calls" if grpc else "pages of 1 MiB"
    return (f"10 h2c connections x 128 {what}, no window: RSS {before:.0f} -> {after:.0f} MB; answers "
            + ", ".join(f"{n}x {code}" for code, n in sorted(statuses.items())))

def grpcwindow(binary):
    """`h2window` over gRPC."""
    return h2window(binary, grpc=True)

def idle(binary):
    """1,000 TCP chat sockets that send nothing, with --idle-timeout 5."""
    p, tcp, port = start(binary, ["--idle-timeout", "5"])
    socks = [socket.create_connection(("127.0.0.1", tcp), 5) for _ in range(1000)]
    time.sleep(12)
    closed = 0
    for s in socks:
        s.setblocking(False)
        try:
            while True:
                data = s.recv(65536)
                if not data:
                    closed += 1
                    break
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
    p.kill(); p.wait()
    return f"1,000 silent TCP chat sockets, --idle-timeout 5: {closed} closed after 12 s"

CASES = {f.__name__: f for f in (history, udp, slowloris, flood, wildcards, guesses, wills, h2window, grpcwindow, idle)}

if __name__ == "__main__":
    binary = sys.argv[1]
    for name in sys.argv[2:] or CASES:
        print(CASES[name](binary), flush=True)
