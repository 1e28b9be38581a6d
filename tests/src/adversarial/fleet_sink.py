# Export receivers for the fleet's adversarial suite: they keep exactly the bytes the gateway
# sent, for the test's strict parsers (RFC 5424, CEF, Splunk HEC, OTLP/HTTP JSON). A syslog UDP
# datagram is one record; a syslog TCP connection's bytes are records in arrival order (same
# conn id); HEC (HTTPS, the given certificate) and OTLP (plain HTTP) requests are one record each
# with their headers, answered as the real services answer ({"text":"Success","code":0}; {}).
#
# argv: config.json out.jsonl. Config: ip, udp (a list of ports), tcp, hec, otlp (ports; 0 =
# off), cert, key. UDP records are tagged with their port.
import json, socket, ssl, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

cfg = json.load(open(sys.argv[1]))
out = open(sys.argv[2], "a")
lock = threading.Lock()


def rec(**kw):
    with lock:
        out.write(json.dumps(kw) + "\n")
        out.flush()


def udp_socket(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.bind((cfg["ip"], port))
    return s


def tcp_socket():
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((cfg["ip"], cfg["tcp"]))
    ls.listen(16)
    return ls


def http_server(port, tls):
    srv = ThreadingHTTPServer((cfg["ip"], port), H)
    if tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cfg["cert"], cfg["key"])
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    return srv


def udp(s):
    port = s.getsockname()[1]
    while True:
        d, peer = s.recvfrom(1 << 17)
        rec(kind="udp", port=port, data=d.hex())


def tcp(ls):
    n = 0
    while True:
        c, _ = ls.accept()
        n += 1

        def one(c=c, k=n):
            while True:
                d = c.recv(65536)
                if not d:
                    rec(kind="tcp-close", conn=k)
                    return
                rec(kind="tcp", conn=k, data=d.hex())

        threading.Thread(target=one, daemon=True).start()


class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                body += self.rfile.read(size)
                self.rfile.readline()
        kind = "hec" if self.server.server_address[1] == cfg["hec"] else "otlp"
        rec(kind=kind, path=self.path, headers=[[k, v] for k, v in self.headers.items()], data=body.hex())
        reply = b'{"text":"Success","code":0}' if kind == "hec" else b"{}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)


ts = []
for p in cfg.get("udp") or []:
    ts.append(threading.Thread(target=udp, args=(udp_socket(p),), daemon=True))
if cfg.get("tcp"):
    ts.append(threading.Thread(target=tcp, args=(tcp_socket(),), daemon=True))
if cfg.get("hec"):
    ts.append(threading.Thread(target=http_server(cfg["hec"], True).serve_forever, daemon=True))
if cfg.get("otlp"):
    ts.append(threading.Thread(target=http_server(cfg["otlp"], False).serve_forever, daemon=True))
for t in ts:
    t.start()
print("ready", flush=True)
for t in ts:
    t.join()
