# The approval web page's attacker (tests/src/adversarial/fleet.rs): a scripted browser over
# raw HTTP/1.1 + TLS (cookies kept per session, redirects followed by hand so every hop is
# seen), driven from OWASP's CSRF, XSS, session-management and unvalidated-redirect cheat
# sheets and OpenID Connect Core 3.1.2.1 / 3.1.3.7 (state, nonce, code flow). It finds the page's
# sign-in link and forms by reading the HTML, never by knowing its routes.
#
# Sign-in goes through the misbehaving provider (fleet_op.py): the gateway's authorization
# request is read, passed to the provider with the case to mint (adv_case) and the user
# (adv_user), and the provider's answer (a callback URL with a code) is handed back to the page.
#
# argv: config.json results.jsonl. Config: web (origin), issuer, markers {name: marker text of
# a pending hold}, cli [argv of `gateway ... -c CONFIG`], token_cases [names to sign in with,
# each must end with no session], xss {case: [payload substrings that must not appear raw]}.
# Each result line: {"name", "ok", "why"}.
import html.parser, http.client, json, re, socket, ssl, subprocess, sys, time, urllib.parse

cfg = json.load(open(sys.argv[1]))
out = open(sys.argv[2], "w")
WEB = cfg["web"].rstrip("/")
ISS = cfg["issuer"].rstrip("/")
web_u = urllib.parse.urlsplit(WEB)
CTX = ssl._create_unverified_context()  # the page's certificate is the gateway's business


def result(name, ok, why=""):
    out.write(json.dumps({"name": name, "ok": bool(ok), "why": why}) + "\n")
    out.flush()


class Resp:
    def __init__(self, status, headers, body, url):
        self.status, self.headers, self.body, self.url = status, headers, body, url

    def header(self, n):
        for k, v in self.headers:
            if k.lower() == n.lower():
                return v
        return None

    def all(self, n):
        return [v for k, v in self.headers if k.lower() == n.lower()]

    def brief(self):
        return "%s %s" % (self.status, re.sub(r"\s+", " ", self.body[:160]))


def raw_request(url, method="GET", headers=(), body=b""):
    u = urllib.parse.urlsplit(url)
    port = u.port or 443
    s = socket.create_connection((u.hostname, port), timeout=20)
    t = CTX.wrap_socket(s, server_hostname=u.hostname)
    c = http.client.HTTPConnection(u.hostname, port, timeout=20)
    c.sock = t
    target = (u.path or "/") + ("?" + u.query if u.query else "")
    c.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
    names = {k.lower() for k, _ in headers}
    if "host" not in names:
        c.putheader("Host", u.netloc)
    for k, v in headers:
        c.putheader(k, v)
    if body or method == "POST":
        c.putheader("Content-Length", str(len(body)))
    c.endheaders(body or None)
    r = c.getresponse()
    data = r.read().decode("utf-8", "replace")
    c.close()
    return Resp(r.status, r.getheaders(), data, url)


class Session:
    """A browser profile: its cookies for the page's origin (attributes kept for checks)."""

    def __init__(self, name):
        self.name = name
        self.cookies = {}
        self.set_cookie_lines = []
        self.history = []

    def cookie_header(self):
        return "; ".join("%s=%s" % kv for kv in self.cookies.items())

    def request(self, url, method="GET", headers=(), body=b"", cookies=True):
        h = list(headers)
        if cookies and self.cookies and urllib.parse.urlsplit(url).netloc == web_u.netloc:
            h.append(("Cookie", self.cookie_header()))
        r = raw_request(url, method, h, body)
        if urllib.parse.urlsplit(url).netloc == web_u.netloc:
            for line in r.all("Set-Cookie"):
                self.set_cookie_lines.append(line)
                nv = line.split(";", 1)[0]
                k, _, v = nv.partition("=")
                k = k.strip()
                attrs = line.lower()
                expired = "max-age=0" in attrs or "expires=thu, 01 jan 1970" in attrs or v == ""
                if expired:
                    self.cookies.pop(k, None)
                else:
                    self.cookies[k] = v.strip()
        self.history.append((method, url, r.status, r.header("Location")))
        return r

    def follow(self, url, method="GET", headers=(), body=b"", stop_at_issuer=True, hops=10):
        """Follow redirects on the page's origin; stop at one that leaves it."""
        r = self.request(url, method, headers, body)
        for _ in range(hops):
            loc = r.header("Location")
            if r.status not in (301, 302, 303, 307, 308) or not loc:
                return r
            nxt = urllib.parse.urljoin(r.url, loc)
            if urllib.parse.urlsplit(nxt).netloc != web_u.netloc:
                r.next = nxt
                return r
            r = self.request(nxt)
        return r


class Forms(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.forms, self.links, self.cur, self.button = [], [], None, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self.cur = {"action": a.get("action", ""), "method": (a.get("method") or "get").upper(), "inputs": [], "text": ""}
            self.forms.append(self.cur)
        elif tag in ("input", "button", "textarea", "select") and self.cur is not None:
            i = {"tag": tag, "name": a.get("name"), "type": (a.get("type") or ("submit" if tag == "button" else "")).lower(), "value": a.get("value", ""), "text": ""}
            self.cur["inputs"].append(i)
            if tag == "button":
                self.button = i
        elif tag == "a" and a.get("href"):
            self.links.append(a["href"])

    def handle_endtag(self, tag):
        if tag == "form":
            self.cur = None
        if tag == "button":
            self.button = None

    def handle_data(self, data):
        if self.cur is not None:
            self.cur["text"] += data
        if self.button is not None:
            self.button["text"] += data


def parse(body):
    f = Forms()
    try:
        f.feed(body)
    except Exception:
        pass
    return f


def sign_in_start(s, start=None):
    """From the page to the provider: the authorization request the gateway built (None: none)."""
    starts = [start] if start else ["/", "/login", "/signin", "/auth/login", "/oidc/login"]
    for st in starts:
        r = s.follow(urllib.parse.urljoin(WEB + "/", st.lstrip("/")) if not st.startswith("http") else st)
        nxt = getattr(r, "next", None)
        if nxt and nxt.startswith(ISS):
            return nxt
        # A sign-in link or form on the page.
        f = parse(r.body)
        cands = [l for l in f.links if re.search(r"log.?in|sign.?in|auth", l, re.I)]
        cands += [fm["action"] for fm in f.forms if re.search(r"log.?in|sign.?in|auth", fm["action"] + fm["text"], re.I)]
        for c in cands:
            r2 = s.follow(urllib.parse.urljoin(r.url, c))
            nxt = getattr(r2, "next", None)
            if nxt and nxt.startswith(ISS):
                return nxt
    return None


def provider_authorize(auth_url, case="ok-alice", user="alice", mutate=None):
    """The provider's answer to the authorization request: the callback URL (with code)."""
    u = urllib.parse.urlsplit(auth_url)
    q = dict(urllib.parse.parse_qsl(u.query))
    q["adv_case"], q["adv_user"] = case, user
    if mutate:
        mutate(q)
    r = raw_request(ISS + "/authorize?" + urllib.parse.urlencode(q))
    return r.header("Location"), q


def sign_in(s, case="ok-alice", user="alice", mutate_auth=None, mutate_cb=None, start=None):
    """The whole code flow; the last response on the page's origin (None when no flow)."""
    auth = sign_in_start(s, start)
    if not auth:
        return None, None
    cb, q = provider_authorize(auth, case, user, mutate_auth)
    if not cb:
        return None, q
    if mutate_cb:
        cb = mutate_cb(cb)
    return s.follow(cb), q


def page(s):
    return s.follow(WEB + "/")


def signed_in(s, marker):
    """Signed in with rights iff the page shows the pending hold."""
    r = page(s)
    return r.status == 200 and marker in r.body


def pending_cli():
    p = subprocess.run(cfg["cli_list"], capture_output=True, text=True)
    return p.stdout


def still_pending(marker):
    return marker in pending_cli()


def decision_form(body, hold_id, verb="approve"):
    """The form that decides hold `hold_id` with `verb` (its action or a field names the id)."""
    hid = str(hold_id)
    for fm in parse(body).forms:
        act = fm["action"]
        names_id = re.search(r"(^|[/=:])%s($|[/?&#])" % re.escape(hid), act) or any(i["value"] == hid for i in fm["inputs"])
        says = verb in (act + " ".join(i["value"] + " " + (i["name"] or "") + " " + i["text"] for i in fm["inputs"])).lower()
        if names_id and says:
            return fm
    return None


def form_body(fm, drop=lambda i: False, reason="adv"):
    fields = []
    chose_button = False
    for i in fm["inputs"]:
        if not i["name"] or drop(i):
            continue
        if i["type"] in ("submit",) and i["tag"] == "input" and "approve" not in (i["value"] + i["name"]).lower():
            continue
        if i["tag"] == "button" or i["type"] == "submit":
            if chose_button:
                continue
            if "approve" not in (i["value"] + (i["name"] or "") + i["text"]).lower():
                continue
            chose_button = True
        if i["tag"] == "textarea" or i["type"] in ("text", ""):
            fields.append((i["name"], i["value"] or reason))
        else:
            fields.append((i["name"], i["value"]))
    return fields


def csrfish(i):
    return i["type"] == "hidden" and (re.search(r"csrf|token|nonce|xsrf", i["name"] or "", re.I) or len(i["value"]) >= 16)


def post_form(s, fm, fields, headers=()):
    body = urllib.parse.urlencode(fields).encode()
    url = urllib.parse.urljoin(WEB + "/", fm["action"])
    h = [("Content-Type", "application/x-www-form-urlencoded"), ("Origin", WEB)] + list(headers)
    # Our Origin is replaced when a case gives its own.
    names = [k.lower() for k, _ in headers]
    if "origin" in names or "no-origin" in names:
        h = [x for x in h if not (x[0] == "Origin" and x[1] == WEB)]
        h = [x for x in h if x[0].lower() != "no-origin"]
    return s.request(url, "POST", h, body)


cases = set(cfg["cases"])
MARK = cfg["markers"]


def run(name, fn):
    if name not in cases:
        return
    try:
        ok, why = fn()
    except Exception as e:
        ok, why = False, "the case could not run: %s: %s" % (type(e).__name__, e)
    result(name, ok, why)


# --- The control: sign-in works, the page shows the hold. Without it nothing below counts.
alice = Session("alice")
r, _ = sign_in(alice)
control_ok = r is not None and signed_in(alice, MARK["csrf"])
result("web-control-sign-in", control_ok, "" if control_ok else "no sign-in flow found or the page does not show the hold after signing in as alice: %s; hops %s" % (r.brief() if r else None, alice.history[-8:]))
if not control_ok:
    sys.exit(0)

home = page(alice)


def hold_form(marker_key, s=alice):
    body = page(s).body
    hid = cfg["ids"][marker_key]
    return decision_form(body, hid)


# --- Cookies (OWASP Session Management: Secure, HttpOnly, SameSite).
def cookie_attrs():
    bad = []
    for line in alice.set_cookie_lines:
        low = [a.strip().lower() for a in line.split(";")[1:]]
        name = line.split("=", 1)[0]
        if any(a.startswith("max-age=0") for a in low):
            continue
        miss = [a for a in ("secure", "httponly") if a not in low]
        ss = [a for a in low if a.startswith("samesite=")]
        if not ss or ss[0] not in ("samesite=lax", "samesite=strict"):
            miss.append("SameSite=Lax|Strict")
        if any(a.startswith("domain=") for a in low):
            miss.append("no Domain attribute")
        if miss:
            bad.append("%s lacks %s" % (name, ", ".join(miss)))
    if not alice.set_cookie_lines:
        return False, "no Set-Cookie seen during sign-in"
    return not bad, "; ".join(bad)


run("web-cookie-attributes", cookie_attrs)


def no_token_in_page():
    minted = [json.loads(l)["token"] for l in open(cfg["minted"]) if l.strip()]
    sigs = [t.rsplit(".", 1)[-1] for t in minted if len(t) > 40]
    found = [h for h in alice.history if h[3] and "id_token" in h[3]]
    body = home.body
    leaked = [x for x in sigs if x and x in body]
    why = []
    if found:
        why.append("a redirect carries id_token: %s" % found[0][3][:80])
    if leaked:
        why.append("the page's HTML holds an ID token's signature")
    return not why, "; ".join(why)


run("web-no-token-in-page", no_token_in_page)


def framing():
    xfo = (home.header("X-Frame-Options") or "").lower()
    csp = (home.header("Content-Security-Policy") or "").lower()
    ok = xfo in ("deny", "sameorigin") or "frame-ancestors" in csp
    return ok, "" if ok else "the approval page can be framed (no X-Frame-Options, no CSP frame-ancestors): clickjacking on approve (OWASP Clickjacking Defense)"


run("web-clickjacking", framing)


# --- XSS in what the page shows (OWASP XSS Prevention rules 1-2: escape for the context).
def xss(case):
    def f():
        body = home.body
        hits = [p for p in cfg["xss"][case] if p in body]
        if MARK.get(case) and MARK[case] not in body:
            return False, "the hold is not on the page, cannot judge"
        return not hits, "raw in the page's HTML: %s" % hits if hits else ""

    return f


for c in cfg.get("xss", {}):
    run(c, xss(c))


# --- CSRF (OWASP CSRF Prevention: synchronizer token, Origin verification, no state change on GET).
def csrf_case(name, key, how):
    def f():
        fm = hold_form(key)
        if not fm:
            return False, "no approve form for the hold on the page (cannot judge): %s" % page(alice).brief()
        r = how(fm)
        time.sleep(1.0)
        if not still_pending(MARK[key]):
            return False, "the hold was approved: %s" % (r.brief() if r is not None else "")
        return True, ""

    run(name, f)


csrf_case("web-csrf-missing-token", "csrf", lambda fm: post_form(alice, fm, form_body(fm, drop=csrfish)))
bob_s = Session("alice-2")
sign_in(bob_s)


def other_session_token(fm):
    fm2 = hold_form("csrf", bob_s)
    if not fm2:
        return None
    theirs = {i["name"]: i["value"] for i in fm2["inputs"] if csrfish(i)}
    fields = [(k, theirs.get(k, v)) for k, v in form_body(fm)]
    if not theirs or fields == form_body(fm):
        return None
    return post_form(alice, fm, fields)


csrf_case("web-csrf-other-sessions-token", "csrf", other_session_token)
csrf_case("web-csrf-origin-evil", "csrf", lambda fm: post_form(alice, fm, form_body(fm), [("Origin", "https://evil.example")]))
csrf_case("web-csrf-origin-null", "csrf", lambda fm: post_form(alice, fm, form_body(fm), [("Origin", "null")]))
csrf_case(
    "web-csrf-referer-evil-no-origin",
    "csrf",
    lambda fm: post_form(alice, fm, form_body(fm), [("no-origin", "1"), ("Referer", "https://evil.example/x")]),
)
csrf_case(
    "web-csrf-get-changes-state",
    "csrf",
    lambda fm: alice.request(urllib.parse.urljoin(WEB + "/", fm["action"]) + ("&" if "?" in fm["action"] else "?") + urllib.parse.urlencode(form_body(fm))),
)
csrf_case(
    "web-csrf-json-no-token",
    "csrf",
    lambda fm: alice.request(
        urllib.parse.urljoin(WEB + "/", fm["action"]),
        "POST",
        [("Content-Type", "application/json"), ("Origin", WEB)],
        json.dumps(dict(form_body(fm, drop=csrfish))).encode(),
    ),
)
csrf_case(
    "web-csrf-text-plain-no-token",
    "csrf",
    lambda fm: alice.request(
        urllib.parse.urljoin(WEB + "/", fm["action"]),
        "POST",
        [("Content-Type", "text/plain")],
        urllib.parse.urlencode(form_body(fm, drop=csrfish)).encode(),
    ),
)


# A signed-in user without approver rights.
def bob_cannot():
    b = Session("bob")
    r, _ = sign_in(b, "ok-bob-no-rights", "bob")
    if r is None:
        return False, "no sign-in flow for bob"
    fm = hold_form("csrf")  # alice's form: bob replays its fields with his own session
    shown = MARK["csrf"] in page(b).body
    if fm:
        fm_b = hold_form("csrf", b)
        post_form(b, fm_b or fm, form_body(fm_b or fm))
    time.sleep(1.0)
    why = []
    if shown:
        why.append("bob (not in llm-approvers) sees the hold's excerpt")
    if not still_pending(MARK["csrf"]):
        why.append("bob approved the hold")
    return not why, "; ".join(why)


run("web-no-rights-user", bob_cannot)


# --- Callback: state and nonce (OIDC Core 3.1.2.1, 3.1.3.7 step 11; OWASP login CSRF).
def cb_case(name, case="ok-alice", mutate_auth=None, mutate_cb=None, fresh_with=None):
    def f():
        s = Session(name)
        if fresh_with:
            r = fresh_with(s)
        else:
            r, _ = sign_in(s, case, "alice", mutate_auth, mutate_cb)
        if signed_in(s, MARK["csrf"]):
            return False, "signed in: %s" % [h[:3] for h in s.history[-4:]]
        return True, ""

    run(name, f)


def drop_param(p):
    def m(cb):
        u = urllib.parse.urlsplit(cb)
        q = [(k, v) for k, v in urllib.parse.parse_qsl(u.query) if k != p]
        return urllib.parse.urlunsplit(u._replace(query=urllib.parse.urlencode(q)))

    return m


def set_param(p, v):
    def m(cb):
        u = urllib.parse.urlsplit(cb)
        q = [(k, x) for k, x in urllib.parse.parse_qsl(u.query) if k != p] + [(p, v)]
        return urllib.parse.urlunsplit(u._replace(query=urllib.parse.urlencode(q)))

    return m


cb_case("web-callback-state-missing", mutate_cb=drop_param("state"))
cb_case("web-callback-state-wrong", mutate_cb=set_param("state", "attacker-state-0000"))
cb_case("web-callback-state-empty", mutate_cb=set_param("state", ""))


def replay_other_session(s):
    # Login CSRF: the attacker's own completed callback URL, opened in the victim's browser.
    att = Session("attacker")
    auth = sign_in_start(att)
    cb, _ = provider_authorize(auth)
    att.follow(cb)
    return s.follow(cb)


cb_case("web-callback-replayed-in-another-session", fresh_with=replay_other_session)


def replay_same_session(s):
    auth = sign_in_start(s)
    cb, _ = provider_authorize(auth)
    s.follow(cb)
    # Sign out, then the same callback again.
    sign_out(s)
    return s.follow(cb)


def sign_out(s):
    body = page(s).body
    f = parse(body)
    for fm in f.forms:
        if re.search(r"log.?out|sign.?out", fm["action"] + fm["text"] + json.dumps(fm["inputs"]), re.I):
            return post_form(s, fm, [(i["name"], i["value"]) for i in fm["inputs"] if i["name"]])
    for l in f.links:
        if re.search(r"log.?out|sign.?out", l, re.I):
            return s.follow(urllib.parse.urljoin(WEB + "/", l))
    return None


cb_case("web-callback-replayed-after-sign-out", fresh_with=replay_same_session)
cb_case("web-callback-nonce-missing", case="nonce-missing")
cb_case("web-callback-nonce-wrong", case="nonce-wrong")
def id_token_in_query(s):
    # An implicit-flow answer the client never asked for (response_type is code).
    auth = sign_in_start(s)
    q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(auth).query))
    cb = q["redirect_uri"] + "?" + urllib.parse.urlencode({"state": q.get("state", ""), "id_token": cfg["ok_token"]})
    return s.follow(cb)


cb_case("web-callback-id-token-in-query", fresh_with=id_token_in_query)
cb_case(
    "web-callback-error-param",
    mutate_cb=lambda cb: set_param("error", "access_denied")(drop_param("code")(cb)),
)
for tc in cfg["token_cases"]:
    cb_case("web-token-" + tc, case=tc)


# --- Sign-out ends the session on the server (OWASP Session Management: logout).
def signout_server_side():
    s = Session("signout")
    sign_in(s)
    if not signed_in(s, MARK["csrf"]):
        return False, "could not sign in"
    saved = dict(s.cookies)
    r = sign_out(s)
    if r is None:
        return False, "no sign-out form or link on the page"
    s2 = Session("replay")
    s2.cookies = saved
    if signed_in(s2, MARK["csrf"]):
        return False, "the session cookie from before sign-out still works"
    return True, ""


run("web-sign-out-is-server-side", signout_server_side)


def session_rotates():
    s = Session("fixation")
    page(s)
    before = dict(s.cookies)
    sign_in(s)
    same = [k for k, v in before.items() if s.cookies.get(k) == v and len(v) >= 8]
    return not same, "cookies unchanged across sign-in (session fixation): %s" % same if same else ""


run("web-session-id-rotates-at-sign-in", session_rotates)


# --- Open redirects (OWASP Unvalidated Redirects and Forwards).
EVIL = ["https://evil.example/x", "//evil.example/x", "/\\evil.example/x", "https:evil.example", "https://evil.example%2f@" + web_u.netloc]


def open_redirect(param, target):
    def f():
        s = Session("redir")
        for start in ["/login?%s=%s" % (param, urllib.parse.quote(target, safe="")), "/?%s=%s" % (param, urllib.parse.quote(target, safe=""))]:
            auth = sign_in_start(s, start)
            if not auth:
                continue
            cb, _ = provider_authorize(auth)
            r = s.request(cb)
            for _ in range(6):
                loc = r.header("Location")
                if not loc or r.status not in (301, 302, 303, 307, 308):
                    break
                nxt = urllib.parse.urljoin(r.url, loc)
                host = urllib.parse.urlsplit(nxt).netloc
                if "evil.example" in nxt and host != web_u.netloc or host.endswith("evil.example"):
                    return False, "after sign-in the page redirects to %s" % loc
                if host != web_u.netloc:
                    break
                r = s.request(nxt)
            # A page that links or meta-refreshes there is no better.
            if re.search(r'(href|url)=["\']?(https?:)?//evil\.example', r.body, re.I):
                return False, "the page sends the browser to evil.example"
        return True, ""

    return f


for i, p in enumerate(["next", "redirect", "return_to", "redirect_uri", "returnTo"]):
    for j, t in enumerate(EVIL[:3] if p == "next" else EVIL[:1]):
        run("web-open-redirect-%s-%d" % (p, j), open_redirect(p, t))


def host_header():
    s = Session("host")
    r = s.request(WEB + "/login", headers=[("Host", "evil.example"), ("X-Forwarded-Host", "evil.example")])
    for h in [r] + [s.request(WEB + "/", headers=[("Host", "evil.example"), ("X-Forwarded-Host", "evil.example")])]:
        loc = h.header("Location") or ""
        if loc.startswith(ISS):
            q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(loc).query))
            if "evil.example" in q.get("redirect_uri", ""):
                return False, "the authorization request's redirect_uri follows the Host header: %s" % q["redirect_uri"]
        if "evil.example" in loc:
            return False, "redirects to the Host header's name: %s" % loc
    return True, ""


run("web-redirect-uri-ignores-host-header", host_header)


def authz_request_shape():
    s = Session("shape")
    auth = sign_in_start(s)
    q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(auth).query))
    why = []
    if len(q.get("state", "")) < 16:
        why.append("state missing or short (%d chars)" % len(q.get("state", "")))
    if len(q.get("nonce", "")) < 16:
        why.append("nonce missing or short")
    if q.get("response_type") != "code":
        why.append("response_type %r, not code" % q.get("response_type"))
    if q.get("code_challenge_method") != "S256":
        why.append("no PKCE S256 (RFC 9700 2.1.1 recommends it for confidential clients too)")
    s2 = Session("shape2")
    auth2 = sign_in_start(s2)
    q2 = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(auth2).query))
    if q.get("state") and q.get("state") == q2.get("state"):
        why.append("two sign-ins got the same state")
    if q.get("nonce") and q.get("nonce") == q2.get("nonce"):
        why.append("two sign-ins got the same nonce")
    return not why, "; ".join(why)


run("web-authorization-request-has-state-nonce-pkce", authz_request_shape)

# --- The control again, last: a correct approve through the page works.
fm = hold_form("control")
if not fm:
    result("web-control-approve", False, "no approve form for the control hold")
else:
    r = post_form(alice, fm, form_body(fm))
    ok = False
    for _ in range(30):
        if not still_pending(MARK["control"]):
            ok = True
            break
        time.sleep(0.2)
    result("web-control-approve", ok, "" if ok else "a correct approve did not decide the control hold: %s" % r.brief())
