# The adversarial suite's client: runs a list of requests (several at a time), each on its own TLS
# connection, writing exactly the bytes the case says (HTTP/1.1 over a raw socket, h2 through
# the h2 state machine), and prints one JSON line per request with what came back.
#
# argv: cases.json cafile results.jsonl (one line per case). Each case: id, host, ip, proto ("h1" | "h2"), method, target,
# headers [[name, value]], body (hex), chunked (h1: send the body chunked), trailers
# [[name, value]], raw (hex: for h1, the whole request as bytes, nothing added), timeout.
import concurrent.futures, json, os, socket, ssl, sys, threading, time

import h2.config
import h2.connection
import h2.events

cases = json.load(open(sys.argv[1]))
cafile = sys.argv[2]
out = open(sys.argv[3], "w")


def tls(c, alpn):
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.set_alpn_protocols(alpn)
    s = socket.create_connection((c["ip"], 443), timeout=c["timeout"])
    return ctx.wrap_socket(s, server_hostname=c["host"])


def h1_request(c):
    if c.get("raw"):
        return bytes.fromhex(c["raw"])
    body = bytes.fromhex(c["body"])
    names = {n.lower() for n, _ in c["headers"]}
    out = [f"{c['method']} {c['target']} HTTP/1.1".encode()]
    if "host" not in names:
        out.append(f"Host: {c['host']}".encode())
    for n, v in c["headers"]:
        out.append(n.encode() + b": " + v.encode("utf-8", "surrogateescape"))
    if "connection" not in names:
        out.append(b"Connection: close")
    if c["chunked"]:
        if "transfer-encoding" not in names:
            out.append(b"Transfer-Encoding: chunked")
        wire = b""
        step = max(1, c.get("chunk", 7))
        for i in range(0, len(body), step):
            part = body[i : i + step]
            wire += b"%x\r\n" % len(part) + part + b"\r\n"
        wire += b"0\r\n"
        for n, v in c["trailers"]:
            wire += n.encode() + b": " + v.encode() + b"\r\n"
        wire += b"\r\n"
    else:
        if "content-length" not in names and (body or c["method"] not in ("GET", "HEAD")):
            out.append(b"Content-Length: %d" % len(body))
        wire = body
    return b"\r\n".join(out) + b"\r\n\r\n" + wire


def parse_h1(data):
    """(status, headers, body, complete) from the bytes so far."""
    while True:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            return None
        lines = head.split(b"\r\n")
        try:
            status = int(lines[0].split(b" ")[1])
        except (IndexError, ValueError):
            return (0, [], data, True)
        if 100 <= status < 200:
            data = rest
            continue
        break
    headers = []
    for l in lines[1:]:
        n, _, v = l.partition(b":")
        headers.append([n.decode("latin-1").strip(), v.decode("latin-1").strip()])
    low = {n.lower(): v for n, v in headers}
    if "chunked" in low.get("transfer-encoding", "").lower():
        body, trailers, i = b"", [], 0
        while True:
            j = rest.find(b"\r\n", i)
            if j < 0:
                return (status, headers, body, False)
            try:
                size = int(rest[i:j].split(b";")[0], 16)
            except ValueError:
                return (status, headers, body + rest[i:], True)
            if size == 0:
                k = rest.find(b"\r\n\r\n", j)
                done = k >= 0 or rest[j : j + 4] == b"\r\n\r\n"
                if k >= 0:
                    for l in rest[j + 2 : k].split(b"\r\n"):
                        if l:
                            n, _, v = l.partition(b":")
                            trailers.append([n.decode("latin-1").strip(), v.decode("latin-1").strip()])
                return (status, headers + [["x-driver-trailer-" + n, v] for n, v in trailers], body, done or rest[j:] == b"\r\n\r\n")
            if len(rest) < j + 2 + size + 2:
                return (status, headers, body + rest[j + 2 :], False)
            body += rest[j + 2 : j + 2 + size]
            i = j + 2 + size + 2
    if "content-length" in low:
        try:
            n = int(low["content-length"])
        except ValueError:
            n = len(rest)
        return (status, headers, rest[:n], len(rest) >= n)
    return (status, headers, rest, False)


def run_h1(c):
    t = tls(c, ["http/1.1"])
    t.sendall(h1_request(c))
    if c.get("half_close"):
        # Nothing more will come from us (the body was cut short).
        try:
            t.shutdown(socket.SHUT_WR)
        except OSError:
            pass
    data = b""
    end = time.time() + c["timeout"]
    while time.time() < end:
        try:
            chunk = t.recv(65536)
        except socket.timeout:
            break
        except (ssl.SSLError, OSError):
            if not data:
                raise
            break
        if not chunk:
            break
        data += chunk
        p = parse_h1(data)
        if p and p[3]:
            break
    t.close()
    p = parse_h1(data)
    if not p:
        return {"status": 0, "headers": [], "body": data.hex(), "error": "no complete response head"}
    return {"status": p[0], "headers": p[1], "body": p[2].hex(), "error": None if p[3] else "incomplete"}


def run_h2(c):
    t = tls(c, ["h2"])
    if t.selected_alpn_protocol() != "h2":
        raise RuntimeError(f"ALPN chose {t.selected_alpn_protocol()!r}, not h2")
    cfg = h2.config.H2Configuration(
        client_side=True,
        header_encoding=None,
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
        validate_inbound_headers=False,
    )
    conn = h2.connection.H2Connection(config=cfg)
    conn.initiate_connection()
    t.sendall(conn.data_to_send())
    sid = conn.get_next_available_stream_id()
    body = bytes.fromhex(c["body"])
    hdrs = [(":method", c["method"]), (":scheme", "https"), (":authority", c["host"]), (":path", c["target"])]
    hdrs += [(n, v) for n, v in c["headers"]]
    status, rheaders, rbody, done, err = 0, [], b"", False, None

    def pump(block=True):
        nonlocal status, rheaders, rbody, done, err
        try:
            data = t.recv(65536)
        except socket.timeout:
            err = "timeout"
            done = True
            return
        if not data:
            done = True
            err = err or "connection closed"
            return
        for ev in conn.receive_data(data):
            if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
                for n, v in ev.headers:
                    n, v = n.decode(), v.decode("latin-1")
                    if n == ":status":
                        status = int(v)
                    else:
                        rheaders.append([n, v])
            elif isinstance(ev, h2.events.TrailersReceived) and ev.stream_id == sid:
                for n, v in ev.headers:
                    rheaders.append(["x-driver-trailer-" + n.decode(), v.decode("latin-1")])
            elif isinstance(ev, h2.events.DataReceived) and ev.stream_id == sid:
                rbody += ev.data
                conn.acknowledge_received_data(ev.flow_controlled_length, sid)
            elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                done = True
            elif isinstance(ev, h2.events.StreamReset) and ev.stream_id == sid:
                done = True
                err = f"stream reset {ev.error_code}"
            elif isinstance(ev, h2.events.ConnectionTerminated):
                done = True
                err = f"goaway {ev.error_code}"
        out = conn.data_to_send()
        if out:
            t.sendall(out)

    end_on_headers = not body and not c["trailers"] and not c.get("reset")
    conn.send_headers(sid, hdrs, end_stream=end_on_headers)
    t.sendall(conn.data_to_send())
    i = 0
    while i < len(body) and not done:
        room = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
        if room <= 0:
            pump()
            continue
        part = body[i : i + room]
        i += len(part)
        last = i >= len(body) and not c["trailers"] and not c.get("reset")
        conn.send_data(sid, part, end_stream=last)
        t.sendall(conn.data_to_send())
    if not done:
        if c.get("reset"):
            conn.reset_stream(sid, error_code=8)
            t.sendall(conn.data_to_send())
            t.settimeout(1)
        elif c["trailers"]:
            conn.send_headers(sid, [(n, v) for n, v in c["trailers"]], end_stream=True)
            t.sendall(conn.data_to_send())
    end = time.time() + (1 if c.get("reset") else c["timeout"])
    while not done and time.time() < end:
        pump()
    t.close()
    return {"status": status, "headers": rheaders, "body": rbody.hex(), "error": err}


def one(c):
    t0 = time.time()
    try:
        r = run_h2(c) if c["proto"] == "h2" else run_h1(c)
    except Exception as e:  # one broken case must not hide the others
        r = {"status": 0, "headers": [], "body": "", "error": f"{type(e).__name__}: {e}"}
    r["id"] = c["id"]
    r["elapsed"] = round(time.time() - t0, 3)
    with lock:
        print(f"{c['id']}: {r['status']} in {r['elapsed']}s {(r.get('error') or '')[:80]}", file=sys.stderr, flush=True)
        out.write(json.dumps(r) + "\n")
        out.flush()


# The cases are independent (each its own connection, judged by its own x-adv-case), and many
# wait on the gateway's or the fake's timers: run them side by side (ADV_WORKERS, default 8;
# 1 runs them one by one, in order).
lock = threading.Lock()
with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, int(os.environ.get("ADV_WORKERS") or 8))) as pool:
    list(pool.map(one, cases))
