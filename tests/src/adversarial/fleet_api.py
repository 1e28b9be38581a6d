# The fleet adversarial suite's admin-API client: sends a list of requests, each on its own
# connection, exactly as written, and writes one JSON line per request with what came back.
# Transport "https": TLS to ip:port (server name `sni`, trusting `cafile`; `insecure` to take
# any certificate, for an API whose certificate the suite cannot know). Transport "unix": HTTP/1.1
# on a Unix socket (run the whole client as the uid the case needs).
#
# argv: requests.json results.jsonl. Request: id, transport, ip, port, sni, cafile, insecure,
# socket, method, target, headers [[n, v]], body (text).
import http.client, json, socket, ssl, sys

reqs = json.load(open(sys.argv[1]))
out = open(sys.argv[2], "w")


class UnixConn(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.path_ = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.path_)
        self.sock = s


def send(r):
    res = {"id": r["id"]}
    try:
        if r["transport"] == "unix":
            c = UnixConn(r["socket"], 20)
        else:
            if r.get("insecure"):
                ctx = ssl._create_unverified_context()
            else:
                ctx = ssl.create_default_context(cafile=r["cafile"])
            c = http.client.HTTPSConnection(r["ip"], r["port"], context=ctx, timeout=20)
            if r.get("sni"):
                c._tunnel_host = None
                c.host = r["sni"]
                c._ip = r["ip"]
                orig = c.connect

                def connect(c=c, r=r, ctx=ctx):
                    s = socket.create_connection((r["ip"], r["port"]), timeout=20)
                    c.sock = ctx.wrap_socket(s, server_hostname=r["sni"])

                c.connect = connect
        c.putrequest(r["method"], r["target"], skip_host=True, skip_accept_encoding=True)
        names = {n.lower() for n, _ in r["headers"]}
        if "host" not in names:
            c.putheader("Host", r.get("sni") or r.get("ip") or "localhost")
        body = (r.get("body") or "").encode()
        for n, v in r["headers"]:
            c.putheader(n, v.encode("utf-8", "surrogateescape"))
        if body or r["method"] in ("POST", "PUT", "PATCH"):
            if "content-length" not in names:
                c.putheader("Content-Length", str(len(body)))
        c.endheaders(body if body else None)
        resp = c.getresponse()
        res["status"] = resp.status
        res["headers"] = [[k, v] for k, v in resp.getheaders()]
        res["body"] = resp.read().decode("utf-8", "replace")[:4000000]
    except (BrokenPipeError, ConnectionResetError) as e:
        res["error"] = "closed: %s: %s" % (type(e).__name__, e)
    except Exception as e:
        res["error"] = "%s: %s" % (type(e).__name__, e)
    return res


for r in reqs:
    # A connection closed before the answer (a busy machine, a server that answers before it
    # reads): tried again, twice; a request that is always cut off stays so.
    for _ in range(3):
        res = send(r)
        if not res.get("error", "").startswith("closed"):
            break
    out.write(json.dumps(res) + "\n")
    out.flush()
