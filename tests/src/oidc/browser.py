"""The user's browser, for the tests' OpenID provider: follows redirects, keeps cookies, and
fills the provider's forms (the login form: `login`, `password`; the device flow's user-code
form: `user_code`), submitting each one as a person would. Plain HTTP form posts.

  browser.py CA START_URL USER PASSWORD [USER_CODE]      browse; prints {"url","status","text"}
  browser.py --token CA ISSUER CLIENT_ID USER PASSWORD [SCOPE]
        authorization code + PKCE for a public native client (redirect
        http://127.0.0.1/callback, not listened on: the code is taken from the redirect);
        prints the token endpoint's JSON answer
"""
import base64
import hashlib
import html.parser
import json
import secrets
import sys
import urllib.parse

import requests


class Forms(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.forms = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self.forms.append({"action": a.get("action", ""), "method": (a.get("method") or "get").lower(), "fields": []})
        elif tag == "input" and self.forms and a.get("name"):
            self.forms[-1]["fields"].append((a["name"], a.get("value") or "", a.get("type", "text")))


def submit_forms(s, r, user, password, user_code, stop=None):
    for _ in range(12):
        if stop and stop(r):
            return r
        p = Forms()
        p.feed(r.text)
        if not p.forms:
            return r
        f = p.forms[0]
        data = {}
        for name, value, _type in f["fields"]:
            if name == "login":
                value = user
            elif name == "password":
                value = password
            elif name == "user_code" and not value:
                if user_code is None:
                    return r
                value = user_code
            data[name] = value
        url = urllib.parse.urljoin(r.url, f["action"])
        r = s.post(url, data=data, allow_redirects=stop is None) if f["method"] == "post" else s.get(url, params=data, allow_redirects=stop is None)
        if stop is not None:
            r = follow(s, r, stop)
    return r


def follow(s, r, stop):
    """Follow redirects by hand until `stop` says the response is the one wanted."""
    for _ in range(20):
        if stop(r) or not r.is_redirect:
            return r
        r = s.get(urllib.parse.urljoin(r.url, r.headers["location"]), allow_redirects=False)
    return r


def browse(ca, start, user, password, user_code):
    s = requests.Session()
    s.verify = ca
    s.trust_env = False  # REQUESTS_CA_BUNDLE would win over `verify`
    r = s.get(start)
    r = submit_forms(s, r, user, password, user_code)
    print(json.dumps({"url": r.url, "status": r.status_code, "text": r.text}))


def token(ca, issuer, client_id, user, password, scope):
    s = requests.Session()
    s.verify = ca
    s.trust_env = False  # REQUESTS_CA_BUNDLE would win over `verify`
    d = s.get(issuer.rstrip("/") + "/.well-known/openid-configuration").json()
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    redirect = "http://127.0.0.1/callback"
    q = {
        "response_type": "code", "client_id": client_id, "redirect_uri": redirect, "scope": scope,
        "state": secrets.token_urlsafe(16), "nonce": secrets.token_urlsafe(16),
        "code_challenge": challenge, "code_challenge_method": "S256", "prompt": "consent",
    }
    at_callback = lambda r: r.is_redirect and r.headers["location"].startswith(redirect)
    r = s.get(d["authorization_endpoint"] + "?" + urllib.parse.urlencode(q), allow_redirects=False)
    r = follow(s, r, at_callback)
    r = submit_forms(s, r, user, password, None, stop=at_callback)
    if not at_callback(r):
        sys.exit(f"no redirect to the client: {r.status_code} {r.url} {r.text[:300]}")
    code = urllib.parse.parse_qs(urllib.parse.urlparse(r.headers["location"]).query)["code"][0]
    t = s.post(d["token_endpoint"], data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": redirect,
        "client_id": client_id, "code_verifier": verifier,
    })
    print(t.text)


if __name__ == "__main__":
    a = sys.argv[1:]
    if a[0] == "--token":
        token(a[1], a[2], a[3], a[4], a[5], a[6] if len(a) > 6 else "openid profile email groups offline_access")
    else:
        browse(a[0], a[1], a[2], a[3], a[4] if len(a) > 4 else None)
