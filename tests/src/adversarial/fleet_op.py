# A misbehaving OpenID provider for the fleet's adversarial suite (tests/src/adversarial/fleet.rs),
# in the manner of the OpenID Foundation's RP certification tests (rp-id_token-sig-none,
# rp-id_token-bad-sig-rs256, rp-id_token-issuer-mismatch, rp-id_token-aud, rp-id_token-iat,
# rp-nonce-invalid, ...): a real discovery document and JWKS over HTTPS, an authorization
# endpoint and a token endpoint (authorization code + PKCE), whose ID tokens are the cases the
# test asks for, correctly or wrongly signed. It also serves an attacker's origin (second port)
# whose key sets and certificates must never be fetched by the gateway (jku / x5u headers).
#
# argv: config.json. Config: issuer, ip, port, attacker_port, cert, key, client_id,
# client_secret, cases (path: [{name, spec}]), tokens_out (path: name -> token, minted at
# start, no nonce), log (path: one JSON line per request received, either port), minted (path:
# the ID tokens the token endpoint handed out, one JSON line each).
#
# Spec of a token: header / claims: overrides of the defaults (null deletes a member); sign:
# op | op-flip | op-strip | attacker | attacker-ec | none | hs-pub-pem | hs-pub-der |
# hs-pub-jwk | hs-client-secret | hs-empty; raw: the token text itself ({OK} = a valid token).
# String values "$ISS", "$CLIENT", "$ATT" (the attacker origin) are replaced; {"$now": N} is
# the current time + N seconds; "$ATT_JWK" / "$ATT_X5C" the attacker's public key / cert chain.
import base64, hashlib, hmac, json, os, secrets, ssl, sys, threading, time, urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

cfg = json.load(open(sys.argv[1]))
ISS = cfg["issuer"]
CLIENT = cfg["client_id"]
ATT = "https://%s:%d" % (cfg["ip"], cfg["attacker_port"])
log_lock = threading.Lock()
codes = {}
codes_used = {}


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def uint(n):
    return b64u(n.to_bytes((n.bit_length() + 7) // 8, "big"))


def rsa_jwk(key, kid):
    pub = key.public_key().public_numbers()
    return {"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": uint(pub.n), "e": uint(pub.e)}


op_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
att_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
att_ec = ec.generate_private_key(ec.SECP256R1())
OP_KID = "op-rsa-1"
OP_JWK = rsa_jwk(op_key, OP_KID)
ATT_JWK = rsa_jwk(att_key, "att-1")


def self_signed(key, cn):
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = __import__("datetime").datetime.now(__import__("datetime").timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - __import__("datetime").timedelta(days=1))
        .not_valid_after(now + __import__("datetime").timedelta(days=30))
        .sign(key, hashes.SHA256())
    )


ATT_CERT = self_signed(att_key, "attacker")
ATT_X5C = [base64.b64encode(ATT_CERT.public_bytes(serialization.Encoding.DER)).decode()]
PUB_PEM = op_key.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)
PUB_DER = op_key.public_key().public_bytes(
    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
)


CUR_CLIENT = threading.local()


def client():
    return getattr(CUR_CLIENT, "id", None) or CLIENT


def subst(v, now):
    if isinstance(v, str):
        if v == "$ATT_JWK":
            return ATT_JWK
        if v == "$ATT_X5C":
            return ATT_X5C
        if v == "$NULL":
            return NULL
        v = v.replace("$ISS_HTTP", ISS.replace("https://", "http://", 1))
        v = v.replace("$CLIENT_UPPER", client().upper())
        return v.replace("$ISS", ISS).replace("$CLIENT", client()).replace("$ATT", ATT)
    if isinstance(v, dict):
        if set(v) == {"$now"}:
            return now + v["$now"]
        return {k: subst(x, now) for k, x in v.items()}
    if isinstance(v, list):
        return [subst(x, now) for x in v]
    return v


class Null:
    """A member present with the JSON value null (None deletes a member)."""


NULL = Null()


def dumps(v):
    return json.dumps(v, separators=(",", ":"), default=lambda o: None)


def merge(base, over, now):
    out = dict(base)
    for k, v in (over or {}).items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = subst(v, now)
    return out


def default_claims(now, nonce):
    c = {
        "iss": ISS,
        "sub": "adv-alice",
        "aud": client(),
        "exp": now + 600,
        "iat": now,
        "auth_time": now,
        "email": "alice@adv.test",
        "email_verified": True,
        "name": "Alice Adversarial",
        "preferred_username": "alice",
        "groups": ["llm-approvers"],
    }
    if nonce is not None:
        c["nonce"] = nonce
    return c


def mint(spec, nonce=None, user_claims=None):
    now = int(time.time())
    if "raw_header_depth" in spec:
        d = spec["raw_header_depth"]
        h = b64u(("[" * d + "]" * d).encode())
        return h + "." + b64u(dumps(default_claims(now, nonce)).encode()) + ".AAAA"
    if "raw" in spec:
        t = spec["raw"].replace("{OK}", mint({}, nonce))
        if spec.get("insert_space"):
            t = t[:-10] + " " + t[-10:]
        if spec.get("pad_to"):
            t = t + "A" * max(0, spec["pad_to"] - len(t))
        return t
    claims = merge(default_claims(now, nonce), user_claims or {}, now)
    claims = merge(claims, spec.get("claims"), now)
    sign = spec.get("sign", "op")
    alg = {"none": "none", "attacker-ec": "ES256"}.get(sign, "RS256")
    if sign.startswith("hs-"):
        alg = "HS256"
    kid = {"attacker": "att-1", "attacker-ec": "att-ec-1"}.get(sign, OP_KID)
    header = merge({"alg": alg, "typ": "JWT", "kid": kid}, spec.get("header"), now)
    if sign in ("none", "hs-empty") and "kid" not in (spec.get("header") or {}):
        header.pop("kid", None)
    h = b64u(dumps(header).encode())
    p = b64u(dumps(claims).encode())
    si = (h + "." + p).encode()
    if sign == "none":
        return h + "." + p + "."
    if sign in ("op", "op-flip", "op-strip"):
        sig = op_key.sign(si, padding.PKCS1v15(), hashes.SHA256())
        if sign == "op-flip":
            sig = sig[:-1] + bytes([sig[-1] ^ 1])
        if sign == "op-strip":
            return h + "." + p + "."
        return h + "." + p + "." + b64u(sig)
    if sign == "attacker":
        return h + "." + p + "." + b64u(att_key.sign(si, padding.PKCS1v15(), hashes.SHA256()))
    if sign == "attacker-ec":
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        r, s = decode_dss_signature(att_ec.sign(si, ec.ECDSA(hashes.SHA256())))
        return h + "." + p + "." + b64u(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
    secret = {
        "hs-pub-pem": PUB_PEM,
        "hs-pub-der": PUB_DER,
        "hs-pub-jwk": json.dumps(OP_JWK).encode(),
        "hs-client-secret": cfg["client_secret"].encode(),
        "hs-empty": b"",
    }[sign]
    return h + "." + p + "." + b64u(hmac.new(secret, si, hashlib.sha256).digest())


cases = {c["name"]: c["spec"] for c in json.load(open(cfg["cases"]))}
json.dump({n: mint(s) for n, s in cases.items()}, open(cfg["tokens_out"], "w"))
USERS = {
    "alice": {},
    "bob": {"sub": "adv-bob", "email": "bob@adv.test", "name": "Bob", "preferred_username": "bob", "groups": ["developers"]},
}


def record(port, handler, body):
    with log_lock, open(cfg["log"], "a") as f:
        f.write(
            json.dumps(
                {
                    "port": port,
                    "method": handler.command,
                    "path": handler.path,
                    "headers": [[k, v] for k, v in handler.headers.items()],
                    "body": body.decode("utf-8", "replace"),
                    "time": time.time(),
                }
            )
            + "\n"
        )


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def reply(self, status, body, ctype="application/json", extra=()):
        if not isinstance(body, (bytes, bytearray)):
            body = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def do_GET(self):
        self.handle_any(b"")

    def do_POST(self):
        self.handle_any(self.body())

    def handle_any(self, body):
        port = self.server.server_address[1]
        record(port, self, body)
        u = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(u.query))
        if port == cfg["attacker_port"]:
            if u.path.endswith(".pem"):
                return self.reply(200, ATT_CERT.public_bytes(serialization.Encoding.PEM), "application/pem-certificate-chain")
            return self.reply(200, {"keys": [ATT_JWK]})
        if u.path == "/.well-known/openid-configuration":
            return self.reply(
                200,
                {
                    "issuer": ISS,
                    "authorization_endpoint": ISS + "/authorize",
                    "token_endpoint": ISS + "/token",
                    "jwks_uri": ISS + "/jwks",
                    "userinfo_endpoint": ISS + "/userinfo",
                    "device_authorization_endpoint": ISS + "/device",
                    "end_session_endpoint": ISS + "/logout",
                    "response_types_supported": ["code"],
                    "grant_types_supported": ["authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:device_code"],
                    "subject_types_supported": ["public"],
                    "id_token_signing_alg_values_supported": ["RS256"],
                    "code_challenge_methods_supported": ["S256"],
                    "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
                    "scopes_supported": ["openid", "email", "profile", "groups", "offline_access"],
                    "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nonce", "email", "name", "groups"],
                },
            )
        if u.path == "/jwks":
            return self.reply(200, {"keys": [OP_JWK]})
        if u.path == "/attacker/jwks":
            # The attacker's key under the issuer's own origin (jku same-origin trick).
            return self.reply(200, {"keys": [ATT_JWK]})
        if u.path == "/authorize":
            code = secrets.token_urlsafe(16)
            codes[code] = dict(q)
            codes_used.setdefault(code, 0)
            loc = q.get("redirect_uri", "")
            params = {"code": code}
            if "state" in q:
                params["state"] = q["state"]
            sep = "&" if "?" in loc else "?"
            return self.reply(302, b"", "text/plain", [("Location", loc + sep + urllib.parse.urlencode(params))])
        if u.path == "/token":
            f = dict(urllib.parse.parse_qsl(body.decode()))
            a = codes.get(f.get("code", ""))
            if a is None:
                return self.reply(400, {"error": "invalid_grant", "error_description": "unknown or used code"})
            if a.get("code_challenge"):
                v = f.get("code_verifier", "")
                want = b64u(hashlib.sha256(v.encode()).digest())
                if want != a["code_challenge"]:
                    return self.reply(400, {"error": "invalid_grant", "error_description": "PKCE verifier mismatch"})
            # The ID token is for the client that redeems the code (OIDC Core 2: aud).
            cid = f.get("client_id") or a.get("client_id")
            auth = self.headers.get("Authorization", "")
            if auth.lower().startswith("basic "):
                try:
                    cid = urllib.parse.unquote(base64.b64decode(auth[6:]).decode().split(":", 1)[0])
                except Exception:
                    pass
            CUR_CLIENT.id = cid
            spec = cases.get(a.get("adv_case", ""), {})
            user = USERS.get(a.get("adv_user", "alice"), {})
            tok = mint(spec, a.get("nonce"), user)
            with log_lock, open(cfg["minted"], "a") as f:
                f.write(json.dumps({"case": a.get("adv_case"), "token": tok}) + "\n")
            return self.reply(
                200,
                {"access_token": "adv-opaque-" + secrets.token_urlsafe(12), "token_type": "Bearer", "expires_in": 600, "id_token": tok},
            )
        if u.path == "/mint":
            return self.reply(200, mint(cases.get(q.get("case", ""), {}), q.get("nonce"), USERS.get(q.get("user", "alice"), {})).encode(), "text/plain")
        if u.path == "/logout":
            return self.reply(200, b"signed out", "text/plain")
        return self.reply(404, {"error": "not_found"})


def serve(port):
    srv = ThreadingHTTPServer((cfg["ip"], port), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cfg["cert"], cfg["key"])
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    srv.serve_forever()


threading.Thread(target=serve, args=(cfg["attacker_port"],), daemon=True).start()
print("ready", flush=True)
serve(cfg["port"])
