# The adversarial suite's second fake provider (issue H): one process serving every address it
# is given on :443 over real TLS (HTTP/1.1), recording every byte it receives as JSON lines, so
# the judges can look for planted secrets in any spelling. It speaks:
#   - WebSocket (RFC 6455): the handshake (Sec-WebSocket-Accept, permessage-deflate RFC 7692
#     accepted when offered), every frame recorded with its header bits and unmasked payload
#     (inflated too when RSV1 is set), scripted server frames sent after the first client data
#     message, close answered with close;
#   - any other Upgrade: answered 101 like a careless server, then every tunnelled byte recorded;
#   - plain HTTP: the request recorded, a scripted answer (bytes, or an AWS event stream built
#     here with correct or deliberately broken CRCs);
#   - AWS SigV4 (Bedrock hosts): the signature recomputed with botocore's signer and the vault's
#     credentials, the payload hash checked against the body received;
#   - a Google OAuth token endpoint (POST /token): the JWT-bearer assertion checked (RS256 with
#     the service account's public key, iss/aud/scope/exp), an access token returned.
#
# argv: config.json. Config: addrs [ip], cert, key, records (path), scripts {case: script},
# aws {ak, sk, token}, sa {email, pub_pem, token_uri, token}. Prints "ready" when listening.
import base64, hashlib, json, os, socket, ssl, struct, sys, threading, time, zlib

cfg = json.load(open(sys.argv[1]))
scripts = cfg.get("scripts", {})
lock = threading.Lock()
out = open(cfg["records"], "a")
next_conn = [0]


def record(r):
    with lock:
        out.write(json.dumps(r) + "\n")
        out.flush()


def conn_id():
    with lock:
        next_conn[0] += 1
        return next_conn[0]


class Closed(Exception):
    pass


class Reader:
    def __init__(self, s):
        self.s, self.buf = s, bytearray()

    def fill(self):
        d = self.s.recv(65536)
        if not d:
            raise Closed()
        self.buf += d

    def exact(self, n):
        while len(self.buf) < n:
            self.fill()
        b = bytes(self.buf[:n])
        del self.buf[:n]
        return b

    def line(self):
        while b"\r\n" not in self.buf:
            if len(self.buf) > 1 << 20:
                raise Closed()
            self.fill()
        i = self.buf.find(b"\r\n")
        l = bytes(self.buf[:i])
        del self.buf[: i + 2]
        return l


def read_request(r):
    first = r.line()
    while first == b"":
        first = r.line()
    parts = first.decode("latin-1").split(" ")
    method, target = parts[0], parts[1] if len(parts) > 1 else ""
    headers = []
    while True:
        l = r.line()
        if not l:
            break
        n, _, v = l.decode("latin-1").partition(":")
        headers.append([n.strip(), v.strip()])
    low = {}
    for n, v in headers:
        low.setdefault(n.lower(), v)
    return method, target, headers, low


def read_body(r, s, low):
    if low.get("expect", "").lower() == "100-continue":
        s.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
    body, trailers = b"", []
    if "chunked" in low.get("transfer-encoding", "").lower():
        while True:
            size = int(r.line().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while True:
                    l = r.line()
                    if not l:
                        break
                    n, _, v = l.decode("latin-1").partition(":")
                    trailers.append([n.strip(), v.strip()])
                break
            body += r.exact(size)
            r.exact(2)
    elif "content-length" in low:
        body = r.exact(int(low["content-length"]))
    return body, trailers


def reason(code):
    return {101: "Switching Protocols", 200: "OK", 400: "Bad Request", 401: "Unauthorized",
            403: "Forbidden", 404: "Not Found", 500: "Internal Server Error"}.get(code, "Status")


def send_chunked(s, status, headers, chunks, delay=0.005):
    head = f"HTTP/1.1 {status} {reason(status)}\r\n"
    for n, v in headers:
        head += f"{n}: {v}\r\n"
    head += "transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    s.sendall(head.encode("latin-1"))
    for c in chunks:
        if c:
            s.sendall(b"%x\r\n" % len(c) + c + b"\r\n")
            time.sleep(delay)
    s.sendall(b"0\r\n\r\n")


def send_full(s, status, ctype, body, extra=()):
    head = f"HTTP/1.1 {status} {reason(status)}\r\ncontent-type: {ctype}\r\ncontent-length: {len(body)}\r\nconnection: close\r\n"
    for n, v in extra:
        head += f"{n}: {v}\r\n"
    s.sendall(head.encode("latin-1") + b"\r\n" + body)


# ---------------------------------------------------------------- AWS event stream


def es_header(name, typ, val):
    n = name.encode()
    h = bytes([len(n)]) + n + bytes([typ])
    if typ == 7 or typ == 6:  # string, byte array: 2-byte length
        v = val.encode() if typ == 7 else bytes.fromhex(val)
        return h + struct.pack(">H", len(v)) + v
    if typ == 0 or typ == 1:  # bool true / false
        return h
    if typ == 2:
        return h + struct.pack(">b", int(val))
    if typ == 3:
        return h + struct.pack(">h", int(val))
    if typ == 4:
        return h + struct.pack(">i", int(val))
    if typ == 5 or typ == 8:  # int64, timestamp (ms)
        return h + struct.pack(">q", int(val))
    if typ == 9:  # uuid: 16 bytes
        return h + bytes.fromhex(val)
    raise ValueError(typ)


def es_frame(f):
    hb = b"".join(es_header(n, t, v) for n, t, v in f["headers"])
    payload = f["payload"].encode() if isinstance(f["payload"], str) else bytes.fromhex(f["payload"]["hex"])
    total = 12 + len(hb) + len(payload) + 4
    prelude = struct.pack(">II", total + f.get("lie_total", 0), len(hb))
    pcrc = zlib.crc32(prelude)
    if f.get("corrupt") == "prelude":
        pcrc ^= 0x5A5A
    msg = prelude + struct.pack(">I", pcrc) + hb + payload
    mcrc = zlib.crc32(msg)
    if f.get("corrupt") == "message":
        mcrc ^= 0x5A5A
    return msg + struct.pack(">I", mcrc)


# ---------------------------------------------------------------- SigV4 and OAuth checks


def check_sigv4(method, target, headers, body):
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    aws = cfg.get("aws") or {}
    low = {}
    for n, v in headers:
        low.setdefault(n.lower(), []).append(v)
    auth = low.get("authorization", [])
    if len(auth) != 1:
        return {"ok": False, "why": f"{len(auth)} Authorization headers"}
    a = auth[0]
    if not a.startswith("AWS4-HMAC-SHA256 "):
        return {"ok": False, "why": "Authorization is not AWS4-HMAC-SHA256"}
    fields = {}
    for kv in a[len("AWS4-HMAC-SHA256 "):].split(","):
        k, _, v = kv.strip().partition("=")
        fields[k] = v
    cred = fields.get("Credential", "").split("/")
    if len(cred) != 5 or cred[0] != aws.get("ak"):
        return {"ok": False, "why": "Credential is not the vault's access key id"}
    date, region, service = cred[1], cred[2], cred[3]
    signed = fields.get("SignedHeaders", "").split(";")
    if "host" not in signed or "x-amz-date" not in signed:
        return {"ok": False, "why": f"host or x-amz-date not signed: {signed}"}
    sha = low.get("x-amz-content-sha256", [None])[0]
    if sha is not None and sha != "UNSIGNED-PAYLOAD" and sha != hashlib.sha256(body).hexdigest():
        return {"ok": False, "why": "x-amz-content-sha256 is not the hash of the body received"}
    tok = low.get("x-amz-security-token", [None])[0]
    if tok != aws.get("token"):
        return {"ok": False, "why": "x-amz-security-token is not the vault's (or missing/extra)"}
    host = low.get("host", [""])[0]
    hs = {}
    for h in signed:
        if h not in low:
            return {"ok": False, "why": f"signed header {h} missing"}
        hs[h] = ",".join(v.strip() for v in low[h])
    req = AWSRequest(method=method, url=f"https://{host}{target}", headers=hs, data=body)
    amz_date = low.get("x-amz-date", [""])[0]
    req.context["timestamp"] = amz_date
    if not amz_date.startswith(date):
        return {"ok": False, "why": "x-amz-date does not match the credential scope date"}
    signer = SigV4Auth(Credentials(aws["ak"], aws["sk"], aws.get("token")), service, region)
    # The signed-header set is the request's own: sign exactly those.
    signer.headers_to_sign = lambda r, _s=signed, _hs=hs: _headers(_s, _hs)
    cr = signer.canonical_request(req)
    sts = signer.string_to_sign(req, cr)
    sig = signer.signature(sts, req)
    if sig != fields.get("Signature"):
        return {"ok": False, "why": "signature does not verify with the vault's secret"}
    return {"ok": True, "why": "", "service": service, "region": region, "sha": sha}


def _headers(signed, hs):
    from botocore.awsrequest import HTTPHeaders

    h = HTTPHeaders()
    for n in signed:
        h[n] = hs[n]
    return h


def b64url_dec(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def check_jwt(form):
    from urllib.parse import parse_qs
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    sa = cfg.get("sa") or {}
    q = parse_qs(form.decode("latin-1"))
    if q.get("grant_type") != ["urn:ietf:params:oauth:grant-type:jwt-bearer"]:
        return {"ok": False, "why": f"grant_type {q.get('grant_type')}"}
    jwt = (q.get("assertion") or [""])[0]
    parts = jwt.split(".")
    if len(parts) != 3:
        return {"ok": False, "why": "assertion is not a JWS"}
    head, claims = json.loads(b64url_dec(parts[0])), json.loads(b64url_dec(parts[1]))
    if head.get("alg") != "RS256":
        return {"ok": False, "why": f"alg {head.get('alg')}"}
    pub = serialization.load_pem_public_key(sa["pub_pem"].encode())
    try:
        pub.verify(b64url_dec(parts[2]), (parts[0] + "." + parts[1]).encode(), padding.PKCS1v15(), hashes.SHA256())
    except Exception:
        return {"ok": False, "why": "assertion signature does not verify with the key's public key"}
    # Google's documented audience is the token endpoint's canonical URL; the key's token_uri
    # is accepted too.
    auds = (sa["token_uri"], "https://oauth2.googleapis.com/token")
    if claims.get("iss") != sa["email"] or claims.get("aud") not in auds:
        return {"ok": False, "why": f"iss/aud {claims.get('iss')} {claims.get('aud')}"}
    if "cloud-platform" not in claims.get("scope", ""):
        return {"ok": False, "why": f"scope {claims.get('scope')}"}
    if not (0 < claims.get("exp", 0) - claims.get("iat", 0) <= 3600):
        return {"ok": False, "why": "exp/iat"}
    return {"ok": True, "why": ""}


# ---------------------------------------------------------------- WebSocket

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def ws_frame(op, payload, fin=True, rsv1=False):
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | op
    n = len(payload)
    if n < 126:
        h = bytes([b0, n])
    elif n < 65536:
        h = bytes([b0, 126]) + struct.pack(">H", n)
    else:
        h = bytes([b0, 127]) + struct.pack(">Q", n)
    return h + payload


def deflate_msg(data):
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    d = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    return d[:-4] if d.endswith(b"\x00\x00\xff\xff") else d


def server_frames(script, deflate):
    out = []
    for f in script.get("server", []):
        p = f["payload"].encode() if isinstance(f["payload"], str) else bytes.fromhex(f["payload"]["hex"])
        rsv1 = f.get("rsv1", False)
        if f.get("compress") and deflate:
            p, rsv1 = deflate_msg(p), True
        if f.get("raw_deflate"):
            p = deflate_msg(p)
        out.append((ws_frame(f.get("op", 1), p, f.get("fin", True), rsv1), f.get("delay", 0.01)))
    return out


def serve_ws(s, r, cid, method, target, headers, low, case):
    key = low.get("sec-websocket-key", "")
    script = scripts.get(case, {})
    status = script.get("status", 101)
    if status != 101:
        send_full(s, status, "application/json", script.get("body", "").encode())
        return
    acc = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
    ext = low.get("sec-websocket-extensions", "")
    deflate = "permessage-deflate" in ext.lower() and script.get("deflate", True)
    resp = f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {acc}\r\n"
    if deflate:
        resp += "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n"
    proto = low.get("sec-websocket-protocol")
    if proto:
        resp += f"Sec-WebSocket-Protocol: {proto.split(',')[0].strip()}\r\n"
    for n, v in script.get("headers", []):
        resp += f"{n}: {v}\r\n"
    s.sendall((resp + "\r\n").encode("latin-1"))
    record({"kind": "ws-open", "conn": cid, "case": case, "deflate": deflate})
    inflater = zlib.decompressobj(-15)
    sent = False
    msg, msg_op, msg_rsv1 = b"", 0, False
    s.settimeout(script.get("idle", 8))
    pending = server_frames(script, deflate)
    if script.get("eager"):
        for fr, d in pending:
            s.sendall(fr)
            time.sleep(d)
        sent = True
    try:
        while True:
            h = r.exact(2)
            fin, rsv = h[0] >> 7, (h[0] >> 4) & 7
            op, masked, n = h[0] & 15, h[1] >> 7, h[1] & 127
            if n == 126:
                n = struct.unpack(">H", r.exact(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", r.exact(8))[0]
            if n > 64 << 20:
                record({"kind": "ws-frame", "conn": cid, "case": case, "op": op, "fin": fin, "rsv": rsv,
                        "masked": masked, "len": n, "payload": "", "note": "too long to read"})
                break
            mk = r.exact(4) if masked else b"\0\0\0\0"
            p = r.exact(n)
            if masked and p:
                k = (mk * (n // 4 + 1))[:n]
                p = (int.from_bytes(p, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")
            fr = {"kind": "ws-frame", "conn": cid, "case": case, "op": op, "fin": fin, "rsv": rsv,
                  "masked": masked, "len": n, "payload": p.hex()}
            if rsv & 4:
                try:
                    fr["inflated"] = zlib.decompressobj(-15).decompress(p + b"\x00\x00\xff\xff").hex()
                except zlib.error:
                    pass
            record(fr)
            if op == 8:
                try:
                    s.sendall(ws_frame(8, p[:2] if len(p) >= 2 else b""))
                except OSError:
                    pass
                break
            if op == 9:
                s.sendall(ws_frame(10, p))
                continue
            if op == 10:
                continue
            if op in (1, 2):
                msg, msg_op, msg_rsv1 = p, op, bool(rsv & 4)
            elif op == 0:
                msg += p
            if fin and op in (0, 1, 2):
                data = msg
                if msg_rsv1:
                    try:
                        data = inflater.decompress(msg + b"\x00\x00\xff\xff")
                    except zlib.error:
                        data = msg
                record({"kind": "ws-message", "conn": cid, "case": case, "op": msg_op, "rsv1": msg_rsv1,
                        "data": data.hex()})
                msg = b""
                if not sent:
                    sent = True
                    for fr2, d in pending:
                        s.sendall(fr2)
                        time.sleep(d)
                    if script.get("close_after"):
                        s.sendall(ws_frame(8, struct.pack(">H", 1000) + b"done"))
    except (Closed, socket.timeout, OSError, ssl.SSLError):
        pass
    record({"kind": "ws-end", "conn": cid, "case": case})


def serve_tunnel(s, r, cid, case, upgrade):
    s.sendall(f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: {upgrade}\r\nConnection: Upgrade\r\n\r\n".encode("latin-1"))
    data = bytes(r.buf)
    s.settimeout(2)
    try:
        while True:
            d = s.recv(65536)
            if not d:
                break
            data += d
    except (socket.timeout, OSError, ssl.SSLError):
        pass
    record({"kind": "tunnel", "conn": cid, "case": case, "data": data.hex()})


# ---------------------------------------------------------------- HTTP


def serve(s, local, sni):
    cid = conn_id()
    r = Reader(s)
    try:
        method, target, headers, low = read_request(r)
    except (Closed, OSError, ssl.SSLError, ValueError):
        record({"kind": "conn", "conn": cid, "local": local, "sni": sni, "partial": bytes(r.buf).hex()})
        return
    case = low.get("x-adv-case", "")
    upgrade = low.get("upgrade", "")
    rec = {"kind": "http", "conn": cid, "local": local, "sni": sni, "case": case, "method": method,
           "target": target, "headers": headers}
    if upgrade and method == "GET" and upgrade.lower() == "websocket":
        record(rec)
        serve_ws(s, r, cid, method, target, headers, low, case)
        return
    try:
        body, trailers = read_body(r, s, low)
    except (Closed, OSError, ssl.SSLError, ValueError):
        rec["body"], rec["partial"] = "", True
        record(rec)
        return
    rec["body"], rec["trailers"] = body.hex(), trailers
    host = low.get("host", sni or "")
    if host.startswith("bedrock-runtime"):
        try:
            rec["sig"] = check_sigv4(method, target, headers, body)
        except Exception as e:
            rec["sig"] = {"ok": False, "why": f"signature check failed: {type(e).__name__}: {e}"}
    if target.split("?")[0] == "/token" and method == "POST":
        rec["kind"] = "token"
        try:
            rec["jwt"] = check_jwt(body)
        except Exception as e:
            rec["jwt"] = {"ok": False, "why": f"{type(e).__name__}: {e}"}
        record(rec)
        sa = cfg.get("sa") or {}
        tok = {"access_token": sa.get("token", ""), "expires_in": 3599, "token_type": "Bearer"}
        if rec["jwt"]["ok"]:
            send_full(s, 200, "application/json", json.dumps(tok).encode())
        else:
            send_full(s, 400, "application/json", json.dumps({"error": "invalid_grant", "error_description": rec["jwt"]["why"]}).encode())
        return
    record(rec)
    if upgrade:
        serve_tunnel(s, r, cid, case, upgrade)
        return
    sc = scripts.get(low.get("x-test-script", case))
    if sc is None:
        if host.startswith("bedrock-runtime"):
            b = {"output": {"message": {"role": "assistant", "content": [{"text": "ok"}]}}, "stopReason": "end_turn",
                 "usage": {"inputTokens": 1, "outputTokens": 1, "totalTokens": 2}, "metrics": {"latencyMs": 1}}
        else:
            b = {"ok": True}
        send_full(s, 200, "application/json", json.dumps(b).encode())
        return
    if "eventstream" in sc:
        blob = b"".join(es_frame(f) for f in sc["eventstream"])
        step = sc.get("split", 0) or len(blob) or 1
        chunks = [blob[i:i + step] for i in range(0, len(blob), step)]
        send_chunked(s, sc.get("status", 200), sc.get("headers", [["content-type", "application/vnd.amazon.eventstream"]]), chunks)
    else:
        send_chunked(s, sc.get("status", 200), sc.get("headers", []), [bytes.fromhex(c) for c in sc.get("chunks", [])])


def listener(ip, ctx):
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((ip, 443))
    ls.listen(64)

    def loop():
        while True:
            try:
                c, _ = ls.accept()
            except OSError:
                continue
            threading.Thread(target=handle, args=(c, ip, ctx), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()


def handle(c, ip, ctx):
    c.settimeout(10)
    try:
        t = ctx.wrap_socket(c, server_side=True)
    except (OSError, ssl.SSLError):
        c.close()
        return
    with lock:
        sni = SNI.pop(id(t), None)
    try:
        serve(t, f"{ip}:443", sni)
    except Exception as e:  # one broken exchange must not stop the fake
        record({"kind": "error", "error": f"{type(e).__name__}: {e}"})
    finally:
        try:
            t.close()
        except OSError:
            pass


SNI = {}


def sni_cb(sock, name, _ctx):
    with lock:
        SNI[id(sock)] = name


ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.sni_callback = sni_cb
ctx.load_cert_chain(cfg["cert"], cfg["key"])
ctx.set_alpn_protocols(["http/1.1"])
for ip in cfg["addrs"]:
    listener(ip, ctx)
print("ready", flush=True)
while True:
    time.sleep(3600)
