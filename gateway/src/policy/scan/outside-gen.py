#!/usr/bin/env python3
"""Generate outside.json (beside this file): synthetic secrets in documented formats, for
the test `the_outside_corpus_is_masked_and_its_near_misses_are_left_alone`.

Written from the providers' public references and public scanner rule sets, without
reading the gateway's detectors (outside-in). Regenerating it draws new random values.

Every secret is freshly random (SystemRandom) in the documented alphabet and
length; checksums are computed where the format has one.
"""
import base64
import json
import os
import random
import string
import subprocess
import tempfile
import zlib

R = random.SystemRandom()

DIG = string.digits
UP = string.ascii_uppercase
LO = string.ascii_lowercase
AN = string.ascii_letters + string.digits
LAN = LO + DIG
UAN = UP + DIG
HEX = "0123456789abcdef"
UHEX = "0123456789ABCDEF"
B64 = AN + "+/"
B64URL = AN + "-_"
B32 = UP + "234567"
B62 = DIG + UP + LO  # GitHub/npm base62 alphabet order


def r(alpha, n):
    return "".join(R.choice(alpha) for _ in range(n))


def rmix(alpha, n):
    """Random string guaranteed to contain upper, lower and digit when the alphabet has them."""
    while True:
        s = r(alpha, n)
        ok = True
        for cls in (UP, LO, DIG):
            if any(c in alpha for c in cls) and not any(c in cls for c in s):
                ok = False
        if ok and "EXAMPLE" not in s.upper() and "TEST" not in s.upper():
            return s


def b62(n, width):
    out = ""
    while n:
        n, d = divmod(n, 62)
        out = B62[d] + out
    return out.rjust(width, "0")


def gh_style(prefix):
    body = rmix(AN, 30)
    return prefix + body + b62(zlib.crc32(body.encode()) & 0xFFFFFFFF, 6)


def b64url(b):
    return base64.urlsafe_b64encode(b).decode().rstrip("=")


def uuid4():
    h = r(HEX, 32)
    h = h[:12] + "4" + h[13:16] + R.choice("89ab") + h[17:]
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def luhn_complete(prefix, length):
    body = prefix + r(DIG, length - len(prefix) - 1)
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:  # these will be doubled once the check digit is appended
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return body + str((10 - total % 10) % 10)


def luhn_ok(num):
    total = 0
    for i, ch in enumerate(reversed(num)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def iban(country, bban):
    rearr = bban + country + "00"
    num = "".join(str(int(c, 36)) for c in rearr)
    check = 98 - int(num) % 97
    out = f"{country}{check:02d}{bban}"
    assert iban_ok(out)
    return out


def iban_ok(s):
    s = s.replace(" ", "")
    rearr = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in rearr)) % 97 == 1


def group4(s):
    return " ".join(s[i:i + 4] for i in range(0, len(s), 4))


def pem_body(nbytes):
    b = base64.b64encode(os.urandom(nbytes)).decode()
    return "\n".join(b[i:i + 64] for i in range(0, len(b), 64))


def openssl_key(args):
    return subprocess.run(["openssl"] + args, check=True, capture_output=True, text=True).stdout.strip()


def ssh_key():
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "k")
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", p], check=True)
        return open(p).read().strip()


def jwt(payload):
    h = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    p = b64url(json.dumps(payload, separators=(",", ":")).encode())
    return f"{h}.{p}.{b64url(os.urandom(32))}"


def macaroon_pypi():
    # libmacaroons v2 binary: version 2, location "pypi.org", identifier, caveat, signature.
    def field(t, data):
        return bytes([t, len(data)]) + data
    ident = uuid4().encode()
    caveat = json.dumps({"version": 1, "permissions": "user"}).encode()
    raw = (b"\x02" + field(1, b"pypi.org") + field(2, ident) + b"\x00"
           + field(2, caveat) + b"\x00" + b"\x00" + field(6, os.urandom(32)))
    return "pypi-" + b64url(raw)


GL = "https://github.com/gitleaks/gitleaks/blob/master/cmd/generate/config/rules/"
TH = "https://github.com/trufflesecurity/trufflehog/blob/main/pkg/detectors/"

V = []


def add(service, kind, source, positive, secret, negative, note=None):
    assert secret in positive, service
    assert secret not in negative, service
    e = {"service": service, "kind": kind, "source": source, "positive": positive,
         "secret": secret, "negative": negative}
    if note:
        e["note"] = note
    V.append(e)


def cred(service, source, positive_tmpl, secret, negative, note=None):
    add(service, "credential", source, positive_tmpl.format(s=secret), secret, negative, note)


# ---------------------------------------------------------------- cloud: AWS
s = "AKIA" + rmix(B32, 16)
cred("AWS access key ID", "https://docs.aws.amazon.com/STS/latest/APIReference/API_GetAccessKeyInfo.html",
     "export AWS_ACCESS_KEY_ID={s}", s,
     "export AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE  # the documentation example key")
s = rmix(B64, 40)
cred("AWS secret access key", "https://docs.aws.amazon.com/STS/latest/APIReference/API_GetAccessKeyInfo.html",
     "aws_secret_access_key = {s}", s,
     "aws_secret_access_key = <paste your secret access key here>")
s = "ASIA" + rmix(B32, 16)
cred("AWS STS temporary access key ID", "https://github.com/Hacking-the-Cloud/hackingthe.cloud/blob/master/content/aws/general-knowledge/iam-key-identifiers.md",
     "\"AccessKeyId\": \"{s}\",", s,
     "\"RoleId\": \"AROA" + r(B32, 17) + "\",  (role IDs are identifiers, not credentials)")
s = base64.b64encode(b"!\n\torigin_ec" + os.urandom(288)).decode()
assert s.startswith("IQoJb3JpZ2luX2Vj")
cred("AWS session token", "https://github.com/trufflesecurity/trufflehog/blob/main/pkg/detectors/aws/session_keys/sessionkey.go",
     "aws_session_token = {s}", s,
     "aws_session_token = ${AWS_SESSION_TOKEN}")
s = "ABSK" + rmix(B64, 128) + "=="
cred("Amazon Bedrock long-term API key", GL + "aws.go",
     "AWS_BEARER_TOKEN_BEDROCK={s}", s,
     "AWS_BEARER_TOKEN_BEDROCK=ABSK...  (truncated in the console screenshot)")

# ---------------------------------------------------------------- cloud: GCP / Google
s = "AIza" + rmix(B64URL, 35)
cred("Google Cloud API key", GL + "gcp.go",
     "curl 'https://maps.googleapis.com/maps/api/geocode/json?address=Paris&key={s}'", s,
     "curl 'https://maps.googleapis.com/maps/api/geocode/json?address=Paris&key=YOUR_API_KEY'")
s = "AIzaSy" + rmix(B64URL, 33)
cred("Google Gemini API key", TH + "googlegemini/googlegemini.go",
     "GEMINI_API_KEY={s}", s,
     "GEMINI_API_KEY=AIzaSy...  # get one at aistudio.google.com")
rsa_pk = openssl_key(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"])
pk_json = rsa_pk.replace("\n", "\\n") + "\\n"
cred("Google Cloud service account private key (JSON)", GL + "gcp.go",
     '{{"type": "service_account", "project_id": "billing-prod-4471", "private_key_id": "' + r(HEX, 40) + '", "private_key": "{s}", "client_email": "ci@billing-prod-4471.iam.gserviceaccount.com"}}',
     pk_json,
     '{"type": "service_account", "project_id": "billing-prod-4471", "private_key_id": "", "private_key": "", "client_email": "ci@billing-prod-4471.iam.gserviceaccount.com"}',
     note="secret is the JSON-escaped PEM (\\n sequences) exactly as it appears in the key file")
s = "GOCSPX-" + rmix(B64URL, 28)
cred("Google OAuth client secret", "https://github.com/trufflesecurity/trufflehog/tree/main/pkg/detectors/googleoauth2",
     '"client_secret": "{s}",', s,
     '"client_id": "' + r(DIG, 12) + '-' + r(LAN, 32) + '.apps.googleusercontent.com",')
s = "ya29." + rmix(B64URL, 150)
cred("Google OAuth access token", TH + "googleoauth2/googleoauth2_access_token.go",
     "Authorization: Bearer {s}", s,
     "Authorization: Bearer ya29.<access-token>")
s = "1//0" + rmix(B64URL, 99)
cred("Google OAuth refresh token", "https://developers.google.com/identity/protocols/oauth2",
     '"refresh_token": "{s}"', s,
     '"refresh_token": null',
     note="format inferred from observed tokens (1// prefix), not a documented grammar")
s = "AIza" + rmix(B64URL, 35)
cred("Firebase Web API key", GL + "gcp.go",
     'const firebaseConfig = {{ apiKey: "{s}", authDomain: "shop-7781.firebaseapp.com" }};', s,
     'const firebaseConfig = { apiKey: process.env.FIREBASE_API_KEY, authDomain: "shop-7781.firebaseapp.com" };')

# ---------------------------------------------------------------- cloud: Azure
s = r(AN + "_~.", 3) + R.choice(DIG) + "Q~" + rmix(AN + "_~.-", 34)
cred("Azure Entra ID (AD) client secret", GL + "azure.go",
     "AZURE_CLIENT_SECRET={s}", s,
     "AZURE_CLIENT_ID=" + uuid4())
acct = "stor" + r(LAN, 10)
s = rmix(B64, 86) + "=="
cred("Azure Storage account key", TH + "azure_storage/storage.go",
     "DefaultEndpointsProtocol=https;AccountName=" + acct + ";AccountKey={s};EndpointSuffix=core.windows.net", s,
     "DefaultEndpointsProtocol=https;AccountName=" + acct + ";AccountKey=<storage-account-key>;EndpointSuffix=core.windows.net")
s = "sv=2022-11-02&ss=b&srt=sco&sp=rwdlacx&se=2026-12-31T23:59:59Z&st=2026-01-01T00:00:00Z&spr=https&sig=" + rmix(AN, 43) + "%3D"
sig = s.split("sig=")[1]
cred("Azure Storage SAS token signature", TH + "azuresastoken/azuresastoken.go",
     "https://" + acct + ".blob.core.windows.net/backups/db.bak?{s}".replace("{s}", s), sig,
     "https://" + acct + ".blob.core.windows.net/backups/db.bak",
     note="only the sig= value is secret-bearing; masking the whole query string is also acceptable")
s = r(LO + "234567", 52)
cred("Azure DevOps personal access token (legacy 52-char)", TH + "azuredevopspersonalaccesstoken/azuredevopspersonalaccesstoken.go",
     "git clone https://pat:{s}@dev.azure.com/contoso/Payments/_git/api", s,
     "git clone https://dev.azure.com/contoso/Payments/_git/api")
s = rmix(AN, 52) + "JQQJ99" + "BL" + "AC" + rmix(AN, 5) + "XJ3w3AAAB" + "AZDO" + rmix(AN, 4)
assert len(s) == 84
cred("Azure DevOps personal access token (84-char)", "https://learn.microsoft.com/en-us/azure/devops/organizations/accounts/use-personal-access-tokens-to-authenticate",
     "AZURE_DEVOPS_EXT_PAT={s}", s,
     "AZURE_DEVOPS_EXT_PAT=$(System.AccessToken)",
     note="UNSURE: layout modelled on the 84-char Microsoft key shape (52 random + JQQJ99 signature + AZDO service tag); not from a published grammar")
s = rmix(AN, 52) + "JQQJ99" + "BF" + "AC" + rmix(AN, 5) + "XJ3w3AAAB" + "ACOG" + rmix(AN, 4)
cred("Azure OpenAI / AI services key (84-char)", "https://learn.microsoft.com/azure/ai-services/authentication (key shape JQQJ99...ACOG observed in public code)",
     "api-key: {s}", s,
     "api-key: {{AZURE_OPENAI_API_KEY}}",
     note="84 chars: 52 random + JQQJ99 + date/region fields + ACOG service tag; layout inferred from observed keys")
s = r(HEX, 32)
cred("Azure OpenAI key (legacy 32 hex)", TH + "azure_openai/azure_openai.go",
     "AZURE_OPENAI_API_KEY=" + "{s}", s,
     "AZURE_OPENAI_ENDPOINT=https://contoso-eastus.openai.azure.com/")
s = rmix(B64, 42) + "+ACR" + rmix(AN, 6)
cred("Azure Container Registry password", TH + "azurecontainerregistry/azurecontainerregistry.go",
     "docker login contosoprod.azurecr.io -u contosoprod -p {s}", s,
     "docker login contosoprod.azurecr.io -u contosoprod --password-stdin")
s = rmix(B64, 86) + "=="
cred("Azure Cosmos DB account key", TH + "azure_cosmosdb",
     "AccountEndpoint=https://orders-db.documents.azure.com:443/;AccountKey={s};", s,
     "AccountEndpoint=https://orders-db.documents.azure.com:443/;")

# ---------------------------------------------------------------- cloud: others
for pfx, name in (("dop_v1_", "personal access token"), ("doo_v1_", "OAuth access token"), ("dor_v1_", "OAuth refresh token")):
    s = pfx + r(HEX, 64)
    cred("DigitalOcean " + name, GL + "digitalocean.go",
         "DIGITALOCEAN_TOKEN={s}", s,
         "DIGITALOCEAN_TOKEN=" + pfx + "xxxxxxxxxxxxxxxxxxxxxxxx")
s = "LTAI" + rmix(AN, 20)
cred("Alibaba Cloud AccessKey ID", GL + "alibaba.go",
     "ALIBABA_CLOUD_ACCESS_KEY_ID={s}", s,
     "ALIBABA_CLOUD_ACCESS_KEY_ID=LTAI****************")
s = rmix(AN, 30)
cred("Alibaba Cloud AccessKey secret", GL + "alibaba.go",
     "alibaba_cloud_access_key_secret: {s}", s,
     "alibaba_cloud_access_key_secret: \"\"")
s = rmix(B64URL, 44)
cred("IBM Cloud API key", TH + "ibmclouduserkey/ibmclouduserkey.go",
     "ibmcloud login --apikey {s} -r us-south", s,
     "ibmcloud login --apikey @~/ibm-apikey.json -r us-south")
s = rmix(AN + "+-_(){}<>:;.#", 20)
cred("Oracle Cloud (OCI) auth token", "https://docs.oracle.com/en-us/iaas/Content/Registry/Tasks/registrygettingauthtoken.htm",
     "docker login fra.ocir.io -u 'axaxnpcrorw5/jdoe@example.com' -p '{s}'", s,
     "docker login fra.ocir.io -u 'axaxnpcrorw5/jdoe@example.com'",
     note="UNSURE: OCI auth tokens are 20 random printable characters; no prefix, only context identifies them")
s = rmix(B64URL, 40)
cred("Cloudflare API token", GL + "cloudflare.go",
     "curl https://api.cloudflare.com/client/v4/user/tokens/verify -H 'Authorization: Bearer {s}'", s,
     "curl https://api.cloudflare.com/client/v4/user/tokens/verify -H 'Authorization: Bearer $CLOUDFLARE_API_TOKEN'")
s = r(HEX, 37)
cred("Cloudflare Global API key", GL + "cloudflare.go",
     "X-Auth-Email: ops@example.org\nX-Auth-Key: {s}", s,
     "cloudflare zone id: " + r(HEX, 32))
s = "v1.0-" + r(HEX, 24) + "-" + r(HEX, 146)
cred("Cloudflare Origin CA key", GL + "cloudflare.go",
     "CF_ORIGIN_CA_KEY={s}", s,
     "CF_ORIGIN_CA_KEY=v1.0-...")
s = "cfut_" + rmix(AN, 40) + r(HEX, 8)
cred("Cloudflare user API token (cfut_)", TH + "cloudflareapitoken/v2/cloudflareapitoken.go",
     "CLOUDFLARE_API_TOKEN={s}", s,
     "CLOUDFLARE_API_TOKEN=cfut_<token>",
     note="trailing 8 hex are a checksum per the trufflehog pattern; algorithm not public, not computed")
s = "HRKU-AA" + rmix(B64URL, 58)
cred("Heroku API key (HRKU-)", GL + "heroku.go",
     "HEROKU_API_KEY={s}", s,
     "HEROKU_APP_NAME=shop-api-staging")
s = uuid4()
cred("Heroku API key (legacy UUID)", GL + "heroku.go",
     "heroku_api_key = \"{s}\"", s,
     "heroku dyno id " + uuid4() + " restarted")
s = rmix(AN, 24)
cred("Vercel access token", TH + "vercel/vercel.go",
     "vercel deploy --prod --token {s}", s,
     "vercel deploy --prod --token $VERCEL_TOKEN")
s = "nfp_" + rmix(AN, 36)
cred("Netlify personal access token", TH + "netlify/v2/netlify_v2.go",
     "NETLIFY_AUTH_TOKEN={s}", s,
     "NETLIFY_SITE_ID=" + uuid4())
s = "FlyV1 fm2_" + rmix(B64, 560) + "=="
cred("Fly.io API token (macaroon)", TH + "flyio/flyio.go",
     "FLY_API_TOKEN=\"{s}\"", s,
     "FLY_API_TOKEN=\"$(fly tokens create deploy)\"",
     note="the scheme word 'FlyV1 ' is part of the token string fly prints")
s = "fo1_" + rmix(B64URL, 43)
cred("Fly.io OAuth token (fo1_)", GL + "flyio.go",
     "Authorization: Bearer {s}", s,
     "Authorization: Bearer fo1_<redacted>")
s = "rnd_" + rmix(AN, 28)
cred("Render API key", "https://api-docs.render.com/reference/authentication",
     "curl -H 'Authorization: Bearer {s}' https://api.render.com/v1/services", s,
     "curl -H 'Authorization: Bearer $RENDER_API_KEY' https://api.render.com/v1/services",
     note="rnd_ + 28 alphanumerics, length taken from observed keys (not a published grammar)")
s = uuid4()
cred("Railway API token", TH + "railwayapp/railwayapp.go",
     "RAILWAY_TOKEN={s}", s,
     "RAILWAY_PROJECT_ID=my-project")
s = "tk-us-" + rmix(B64URL, 48)
cred("Scalingo API token", GL + "scalingo.go",
     "scalingo login --api-token {s}", s,
     "scalingo login --api-token tk-us-XXXX")
s = "tskey-auth-k" + rmix(AN, 10) + "CNTRL-" + rmix(AN, 33)
cred("Tailscale auth key", TH + "tailscale/tailscale.go",
     "tailscale up --authkey={s}", s,
     "tailscale up --authkey=tskey-auth-XXXXXX")

# ---------------------------------------------------------------- VCS / CI: GitHub
for pfx, name in (("ghp_", "personal access token (classic)"), ("gho_", "OAuth access token"),
                  ("ghu_", "App user-to-server token"), ("ghs_", "App server-to-server (installation) token"),
                  ("ghr_", "App refresh token")):
    s = gh_style(pfx)
    cred("GitHub " + name, "https://github.blog/changelog/2021-03-04-authentication-token-format-updates",
         {"ghp_": "GITHUB_TOKEN={s}", "gho_": "Authorization: token {s}", "ghu_": '{{"access_token": "{s}", "token_type": "bearer"}}',
          "ghs_": "git clone https://x-access-token:{s}@github.com/acme/infra.git", "ghr_": '"refresh_token": "{s}"'}[pfx], s,
         {"ghp_": "GITHUB_TOKEN=ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", "gho_": "Authorization: token gho_",
          "ghu_": '{"access_token": "", "token_type": "bearer"}', "ghs_": "git clone https://github.com/acme/infra.git",
          "ghr_": "GitHub refresh tokens start with ghr_ and expire after six months"}[pfx],
         note="last 6 chars are base62(CRC32 of the 30 random chars), zero-padded; computed")
s = "github_pat_11" + rmix(UAN, 20) + "_" + rmix(AN, 59)
cred("GitHub fine-grained personal access token", GL + "github.go",
     "export GH_TOKEN={s}", s,
     "export GH_TOKEN=github_pat_<your token>")
s = "v1." + r(HEX, 40)
cred("GitHub App installation token (legacy v1.)", "https://github.blog/changelog/2021-03-04-authentication-token-format-updates",
     "Authorization: token {s}", s,
     "commit " + r(HEX, 40),
     note="pre-2021 installation tokens; a bare 40-hex is a commit SHA, only the v1. prefix makes it a token")
s = r(HEX, 40)
cred("GitHub OAuth app client secret", TH + "github_oauth2/github_oauth2.go",
     "GITHUB_CLIENT_SECRET={s}", s,
     "Merge commit " + r(HEX, 40) + " into main")

# ---------------------------------------------------------------- GitLab
gl_src = "https://gitlab.com/gitlab-org/gitlab/-/issues/388379"
for pfx, n, name, line in (
        ("glpat-", 20, "personal access token", "PRIVATE-TOKEN: {s}"),
        ("gldt-", 20, "deploy token", "docker login registry.gitlab.com -u gitlab+deploy-token-42 -p {s}"),
        ("glrt-", 20, "runner authentication token", "gitlab-runner register --url https://gitlab.com --token {s}"),
        ("glptt-", 40, "pipeline trigger token", "curl -X POST --fail -F token={s} -F ref=main https://gitlab.com/api/v4/projects/42/trigger/pipeline"),
        ("glft-", 20, "feed token", "https://gitlab.com/dashboard/issues.atom?feed_token={s}"),
        ("glimt-", 25, "incoming mail token", "incoming_email_token: {s}"),
        ("glagent-", 50, "Kubernetes agent token", "helm upgrade --install k8s-agent gitlab/gitlab-agent --set config.token={s}"),
        ("gloas-", 64, "OAuth application secret", "GITLAB_OAUTH_SECRET={s}"),
        ("glffct-", 20, "feature flags client token", "UNLEASH_INSTANCE_ID={s}"),
        ("glsoat-", 20, "SCIM OAuth token", "Authorization: Bearer {s}"),
):
    s = pfx + rmix(B64URL if pfx != "glptt-" else HEX, n)
    cred("GitLab " + name, GL + "gitlab.go" if pfx not in ("glrt-", "glptt-", "glsoat-") else gl_src,
         line, s, line.replace("{s}", pfx + "<token>"),
         note="UNSURE of body length for this prefix" if pfx in ("glrt-", "glptt-", "glsoat-") else None)
s = "glcbt-" + r(HEX, 2) + "_" + rmix(B64URL, 20)
cred("GitLab CI/CD job token", GL + "gitlab.go",
     "curl --header \"JOB-TOKEN: {s}\" https://gitlab.com/api/v4/projects/42/packages", s,
     "curl --header \"JOB-TOKEN: $CI_JOB_TOKEN\" https://gitlab.com/api/v4/projects/42/packages")
payload = b64url(os.urandom(21) + b"\x00" + ("o:" + r(HEX, 6) + "\nu:" + r(DIG, 5)).encode())
pre = "glpat-" + payload + ".01."
crc = zlib.crc32(pre.encode()) & 0xFFFFFFFF


def b36(n, w):
    a = DIG + LO
    o = ""
    while n:
        n, d = divmod(n, 36)
        o = a[d] + o
    return o.rjust(w, "0")


s = pre + b36(len(payload), 2) + b36(crc, 7)
cred("GitLab personal access token (routable, 17.x+)", TH + "gitlab/v3/gitlab_v3.go",
     "GITLAB_TOKEN={s}", s,
     "GITLAB_TOKEN=glpat-**********.01.*********",
     note="UNSURE: routable layout glpat-<base64url payload>.01.<2 base36 length><7 base36 CRC32>; checksum input assumed to be the preceding text")
s = "GR1348941" + rmix(B64URL, 20)
cred("GitLab runner registration token (legacy)", "https://gitlab.com/gitlab-org/gitlab/-/issues/383198",
     "gitlab-runner register --registration-token {s}", s,
     "gitlab-runner register --registration-token $REGISTRATION_TOKEN")

# ---------------------------------------------------------------- Bitbucket / Atlassian
s = "ATBB" + rmix(AN, 32)
cred("Bitbucket app password", TH + "bitbucketapppassword/bitbucketapppassword.go",
     "git remote set-url origin https://jdoe:{s}@bitbucket.org/acme/api.git", s,
     "git remote set-url origin https://jdoe@bitbucket.org/acme/api.git")
s = "ATCTT3xFfGN0" + rmix(B64URL, 171) + "=" + r(UHEX, 8)
cred("Bitbucket repository/workspace access token", TH + "atlassian/v2/atlassian.go",
     "BITBUCKET_ACCESS_TOKEN={s}", s,
     "BITBUCKET_WORKSPACE=acme",
     note="suffix =<8 hex> is a checksum; algorithm not public, not computed")
s = "ATATT3xFfGF0" + rmix(B64URL, 171) + "=" + r(UHEX, 8)
cred("Atlassian API token", GL + "atlassian.go",
     "curl -u jdoe@example.com:{s} https://acme.atlassian.net/rest/api/3/myself", s,
     "curl -u jdoe@example.com:$ATLASSIAN_TOKEN https://acme.atlassian.net/rest/api/3/myself",
     note="suffix =<8 hex> is a checksum; algorithm not public, not computed")
s = rmix(AN, 24)
cred("Atlassian API token (legacy 24-char)", TH + "atlassian/v1/atlassian.go",
     "JIRA_API_TOKEN={s}", s,
     "JIRA_BASE_URL=https://acme.atlassian.net")

# ---------------------------------------------------------------- CI
s = "CCIPAT_" + rmix(AN, 22) + "_" + r(HEX, 40)
cred("CircleCI personal API token", TH + "circleci/v2/circleci.go",
     "curl -H 'Circle-Token: {s}' https://circleci.com/api/v2/me", s,
     "curl -H 'Circle-Token: <your-token>' https://circleci.com/api/v2/me")
s = "CCIPRJ_" + rmix(AN, 22) + "_" + r(HEX, 40)
cred("CircleCI project API token", "https://circleci.com/docs/managing-api-tokens/",
     "CIRCLE_PROJECT_TOKEN={s}", s,
     "CIRCLE_PROJECT_REPONAME=api",
     note="CCIPRJ_ shape assumed identical to CCIPAT_")
s = r(HEX, 40)
cred("CircleCI API token (legacy 40 hex)", TH + "circleci/v1/circleci.go",
     "circleci_token: {s}", s,
     "circleci build " + r(HEX, 7) + " finished")
s = rmix(AN, 22)
cred("Travis CI API token", GL + "travisci.go",
     "TRAVIS_API_TOKEN={s}", s,
     "TRAVIS_BUILD_NUMBER=4821")
s = "bkua_" + r(LAN, 40)
cred("Buildkite user API token", TH + "buildkite/v2/buildkite.go",
     "Authorization: Bearer {s}", s,
     "Authorization: Bearer bkua_...")
s = "bkct_" + rmix(AN, 40)
cred("Buildkite cluster/agent token", "https://buildkite.com/docs/agent/v3/tokens",
     "BUILDKITE_AGENT_TOKEN={s}", s,
     "BUILDKITE_AGENT_NAME=ci-linux-%hostname-%spawn",
     note="UNSURE of the bkct_ suffix length; older agent tokens are 50 hex without prefix")
s = "11" + r(HEX, 32)
cred("Jenkins API token", "https://www.jenkins.io/doc/book/system-administration/authenticating-scripted-clients/",
     "curl -u admin:{s} https://ci.example.org/job/deploy/build", s,
     "curl -u admin:$JENKINS_TOKEN https://ci.example.org/job/deploy/build",
     note="Jenkins 2.129+ tokens: '11' version prefix + 32 hex")
s = r(LAN, 32)
cred("Drone CI token", GL + "droneci.go",
     "DRONE_TOKEN={s}", s, "DRONE_SERVER=https://drone.example.org")
s = rmix(AN, 22) + "." + rmix(AN, 24) + "." + rmix(AN, 20)
s = "pat." + s
cred("Harness personal access token", GL + "harness.go",
     "x-api-key: {s}", s, "x-api-key: pat.<accountId>.<tokenId>.<secret>")
s = "squ_" + r(HEX, 40)
cred("SonarQube user token", GL + "sonar.go",
     "mvn sonar:sonar -Dsonar.token={s}", s, "mvn sonar:sonar -Dsonar.token=${SONAR_TOKEN}")
s = uuid4()
cred("Snyk API token", GL + "snyk.go",
     "SNYK_TOKEN={s}", s, "SNYK_ORG=" + "acme-platform")
s = "API-" + rmix(UAN, 26)
cred("Octopus Deploy API key", GL + "octopusdeploy.go",
     "X-Octopus-ApiKey: {s}", s, "X-Octopus-ApiKey: API-XXXXXXXXXXXXXXXXXXXXXXXXXX")
s = r(LAN, 32)
cred("Codecov upload token", GL + "codecov.go",
     "CODECOV_TOKEN={s}", s, "codecov: commit " + r(HEX, 40))

# ---------------------------------------------------------------- LLM / AI providers
s = "sk-proj-" + rmix(B64URL, 74) + "T3BlbkFJ" + rmix(B64URL, 74)
cred("OpenAI project API key", GL + "openai.go",
     "OPENAI_API_KEY={s}", s, "OPENAI_API_KEY=sk-proj-...your key...",
     note="T3BlbkFJ is base64 of 'OpenAI' and sits mid-key")
s = "sk-svcacct-" + rmix(B64URL, 74) + "T3BlbkFJ" + rmix(B64URL, 74)
cred("OpenAI service account key", GL + "openai.go",
     "Authorization: Bearer {s}", s, "Authorization: Bearer sk-svcacct-")
s = "sk-admin-" + rmix(B64URL, 58) + "T3BlbkFJ" + rmix(B64URL, 58)
cred("OpenAI admin key", TH + "openaiadmin/openaiadmin.go",
     "OPENAI_ADMIN_KEY={s}", s, "OPENAI_ADMIN_KEY=sk-admin-*****")
s = "sk-" + rmix(AN, 20) + "T3BlbkFJ" + rmix(AN, 20)
cred("OpenAI user API key (legacy)", GL + "openai.go",
     "openai.api_key = \"{s}\"", s, "openai.api_key = os.getenv(\"OPENAI_API_KEY\")")
s = "sk-ant-api03-" + rmix(B64URL, 93) + "AA"
cred("Anthropic API key", GL + "anthropic.go",
     "curl https://api.anthropic.com/v1/messages -H 'x-api-key: {s}' -H 'anthropic-version: 2023-06-01'", s,
     "curl https://api.anthropic.com/v1/messages -H \"x-api-key: $ANTHROPIC_API_KEY\" -H 'anthropic-version: 2023-06-01'")
s = "sk-ant-admin01-" + rmix(B64URL, 93) + "AA"
cred("Anthropic Admin API key", GL + "anthropic.go",
     "ANTHROPIC_ADMIN_KEY={s}", s, "ANTHROPIC_ADMIN_KEY=sk-ant-admin01-...")
s = "sk-ant-oat01-" + rmix(B64URL, 93) + "AA"
cred("Anthropic OAuth token (Claude Code)", "https://docs.anthropic.com/en/docs/claude-code/settings",
     "CLAUDE_CODE_OAUTH_TOKEN={s}", s, "CLAUDE_CODE_OAUTH_TOKEN=",
     note="UNSURE: sk-ant-oat01- assumed to share the api03 body shape")
s = rmix(AN, 32)
cred("Mistral AI API key", "https://docs.mistral.ai/api/",
     "MISTRAL_API_KEY={s}", s, "MISTRAL_MODEL=mistral-large-latest",
     note="no prefix: 32 alphanumerics, only the variable name identifies it")
s = "gsk_" + rmix(AN, 52)
cred("Groq API key", TH + "groq/groq.go",
     "GROQ_API_KEY={s}", s, "GROQ_API_KEY=gsk_****")
s = rmix(AN, 40)
cred("Cohere API key", GL + "cohere.go",
     "CO_API_KEY={s}", s, "CO_API_URL=https://api.cohere.com")
s = "hf_" + rmix(string.ascii_letters, 34)
cred("Hugging Face user access token", GL + "huggingface.go",
     "huggingface-cli login --token {s}", s, "huggingface-cli login --token $HF_TOKEN")
s = "api_org_" + rmix(string.ascii_letters, 34)
cred("Hugging Face organization API token", GL + "huggingface.go",
     "HF_ORG_TOKEN={s}", s, "HF_ORG=acme-research")
s = "r8_" + rmix(AN, 37)
cred("Replicate API token", TH + "replicate/replicate.go",
     "REPLICATE_API_TOKEN={s}", s, "REPLICATE_API_TOKEN=r8_<token>")
s = "pplx-" + rmix(AN, 48)
cred("Perplexity API key", GL + "perplexity.go",
     "Authorization: Bearer {s}", s, "Authorization: Bearer pplx-xxxxxxxx")
s = "xai-" + rmix(AN, 80)
cred("xAI (Grok) API key", TH + "xai/xai.go",
     "XAI_API_KEY={s}", s, "XAI_API_KEY=xai-...")
s = "sk-" + r(HEX, 32)
cred("DeepSeek API key", TH + "deepseek/deepseek.go",
     "DEEPSEEK_API_KEY={s}", s, "DEEPSEEK_API_KEY=sk-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx")
s = "sk-or-v1-" + r(HEX, 64)
cred("OpenRouter API key", TH + "openrouter/openrouter.go",
     "OPENROUTER_API_KEY={s}", s, "OPENROUTER_API_KEY=sk-or-v1-<64 hex>")
s = "tgp_v1_" + rmix(B64URL, 43)
cred("Together AI API key", "observed key shape tgp_v1_<43 base64url> in public code search; https://docs.together.ai/reference/authentication",
     "TOGETHER_API_KEY={s}", s, "TOGETHER_API_KEY=tgp_v1_...",
     note="UNSURE: format from observed keys, not a documented grammar; older Together keys are 64 hex")
s = r(HEX, 64)
cred("Together AI API key (legacy 64 hex)", "https://docs.together.ai/reference/authentication",
     "together_api_key: {s}", s, "together model sha256:" + r(HEX, 64))
s = "fw_" + rmix(AN, 24)
cred("Fireworks AI API key", "https://github.com/Ishannaik/agent-sweep/pull/109 (fw_ prefix); https://fireworks.ai/account/api-keys",
     "FIREWORKS_API_KEY={s}", s, "FIREWORKS_API_KEY=fw_...",
     note="UNSURE of length after fw_ (20-24 seen)")
s = "csk-" + r(LAN, 48)
cred("Cerebras API key", "https://inference-docs.cerebras.ai/quickstart",
     "CEREBRAS_API_KEY={s}", s, "CEREBRAS_API_KEY=csk-...", note="UNSURE of length")
s = "lsv2_pt_" + r(HEX, 32) + "_" + r(HEX, 10)
cred("LangSmith API key", TH + "langsmith/langsmith.go",
     "LANGSMITH_API_KEY={s}", s, "LANGSMITH_PROJECT=default")
s = "pcsk_" + rmix(AN, 6) + "_" + rmix(AN, 63)
cred("Pinecone API key", TH + "pinecone/pinecone.go",
     "PINECONE_API_KEY={s}", s, "PINECONE_INDEX=docs-embeddings")
s = "sk_" + r(HEX, 48)
cred("ElevenLabs API key", TH + "elevenlabs/v2/elevenlabs.go",
     "xi-api-key: {s}", s, "xi-api-key: <ELEVENLABS_API_KEY>")
s = r(LAN, 40)
cred("Deepgram API key", TH + "deepgram/deepgram.go",
     "Authorization: Token {s}  # deepgram", s, "deepgram request_id " + uuid4())
s = r(LAN, 32)
cred("AssemblyAI API key", TH + "assemblyai/assemblyai.go",
     "ASSEMBLYAI_API_KEY={s}", s, "assemblyai transcript id " + r(LAN, 10))
s = r(HEX, 40)
cred("Weights & Biases API key", TH + "weightsandbiases/weightsandbiases.go",
     "WANDB_API_KEY={s}", s, "wandb: run " + r(LAN, 8) + " synced")
s = "pa-" + rmix(B64URL, 43)
cred("Voyage AI API key", "https://docs.voyageai.com/docs/api-key-and-installation",
     "VOYAGE_API_KEY={s}", s, "VOYAGE_API_KEY=pa-...", note="UNSURE of length after pa-")
s = "nvapi-" + rmix(B64URL, 64)
cred("NVIDIA NIM API key", "https://docs.api.nvidia.com/nim/docs/api-quickstart",
     "NVIDIA_API_KEY={s}", s, "NVIDIA_API_KEY=nvapi-...", note="UNSURE of length after nvapi-")
s = "tvly-" + rmix(AN, 32)
cred("Tavily API key", "public code search (tvly- prefix)",
     "TAVILY_API_KEY={s}", s, "TAVILY_API_KEY=tvly-YOUR_API_KEY", note="UNSURE of length")

# ---------------------------------------------------------------- payments
s = "sk_live_51" + rmix(AN, 97)
cred("Stripe live secret key", "https://docs.stripe.com/keys",
     "curl https://api.stripe.com/v1/charges -u {s}:", s,
     "curl https://api.stripe.com/v1/charges -u sk_live_...:")
s = "sk_test_51" + rmix(AN, 97)
cred("Stripe test secret key", "https://docs.stripe.com/keys",
     "STRIPE_SECRET_KEY={s}", s, "STRIPE_SECRET_KEY=sk_test_xxx",
     note="test-mode keys still grant API access to the sandbox account")
s = "rk_live_51" + rmix(AN, 97)
cred("Stripe restricted key", "https://gitlab.com/gitlab-org/gitlab/-/issues/458019",
     "stripe.api_key = \"{s}\"", s, "stripe.api_key = os.environ[\"STRIPE_RESTRICTED_KEY\"]")
s = "sk_live_" + rmix(AN, 24)
cred("Stripe live secret key (legacy 24-char)", GL + "stripe.go",
     "Stripe::api_key = '{s}'", s, "Stripe::api_key = ENV['STRIPE_KEY']")
s = "whsec_" + rmix(AN, 32)
cred("Stripe webhook signing secret", "https://docs.stripe.com/webhooks",
     "STRIPE_WEBHOOK_SECRET={s}", s, "Stripe-Signature: t=1700000000,v1=" + r(HEX, 64),
     note="negative is the public signature header, which is not the secret")
s = "EAAA" + rmix(B64URL, 60)
cred("Square access token", GL + "square.go",
     "Authorization: Bearer {s}", s, "Square-Version: 2024-07-17")
s = "sq0csp-" + rmix(B64URL, 43)
cred("Square OAuth application secret", GL + "square.go",
     "SQUARE_APP_SECRET={s}", s, "SQUARE_APP_ID=sq0idp-" + rmix(B64URL, 22),
     note="sq0idp- application IDs are public identifiers")
s = "sq0atp-" + rmix(B64URL, 22)
cred("Square personal access token (legacy)", GL + "square.go",
     "square_access_token: {s}", s, "square_location_id: L" + r(UAN, 12))
s = "access_token$production$" + r(LAN, 16) + "$" + r(HEX, 32)
cred("PayPal Braintree access token", "https://developer.paypal.com/braintree/docs/guides/authorization/overview",
     "BRAINTREE_ACCESS_TOKEN={s}", s, "BRAINTREE_MERCHANT_ID=" + r(LAN, 16))
s = r(HEX, 32)
cred("Braintree private key", TH + "braintreepayments/braintreepayments.go",
     "braintree.Configuration(environment=Production, merchant_id='" + r(LAN, 16) + "', public_key='" + r(LAN, 16) + "', private_key='{s}')", s,
     "braintree.Configuration(environment=Production, merchant_id='m', public_key='p', private_key=os.environ['BT_PRIVATE_KEY'])")
s = "E" + rmix(B64URL, 79)
cred("PayPal REST client secret", TH + "paypaloauth/paypaloauth.go",
     "PAYPAL_CLIENT_SECRET={s}", s, "PAYPAL_CLIENT_ID=A" + rmix(B64URL, 79),
     note="client ID (A...) is public-ish; the E... secret is the credential")
s = "AQE" + rmix(AN, 5) + "hmfx" + rmix(B64, 120) + "=="
cred("Adyen API key", "https://docs.adyen.com/development-resources/api-credentials",
     "X-API-Key: {s}", s, "X-API-Key: ADYEN_API_KEY",
     note="UNSURE: Adyen keys start AQE and are long base64; exact length not documented")
s = r(UHEX, 64)
cred("Adyen HMAC key", "https://docs.adyen.com/development-resources/webhooks/verify-hmac-signatures",
     "ADYEN_HMAC_KEY={s}", s, "ADYEN_MERCHANT_ACCOUNT=AcmeECOM")
for pfx, name in (("shpat_", "Admin API access token"), ("shpca_", "custom app access token"),
                  ("shppa_", "private app access token"), ("shpss_", "shared secret")):
    s = pfx + r(HEX, 32)
    cred("Shopify " + name, GL + "shopify.go",
         "X-Shopify-Access-Token: {s}" if pfx != "shpss_" else "SHOPIFY_API_SECRET={s}", s,
         "X-Shopify-Shop-Domain: acme-store.myshopify.com")
s = "prtapi_" + r(HEX, 32)
cred("Shopify Partner API token", "https://shopify.dev/docs/api/partner",
     "X-Shopify-Access-Token: {s}", s, "shopify partner org id 1234567")
s = "FLWSECK-" + r(HEX, 32) + "-X"
cred("Flutterwave live secret key", TH + "flutterwave/flutterwave.go",
     "FLW_SECRET_KEY={s}", s, "FLW_PUBLIC_KEY=FLWPUBK-" + r(HEX, 32) + "-X",
     note="FLWPUBK public keys are meant to be published")
s = "FLWSECK_TEST-" + r(HEX, 32) + "-X"
cred("Flutterwave test secret key", GL + "flutterwave.go",
     "Authorization: Bearer {s}", s, "Authorization: Bearer FLWSECK_TEST-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx-X")
s = "FLWSECK_TEST" + r(HEX, 12)
cred("Flutterwave encryption key", GL + "flutterwave.go",
     "FLW_ENCRYPTION_KEY={s}", s, "FLW_ENCRYPTION_KEY=")
s = "sk_live_" + rmix(AN, 40)
cred("Paystack secret key", TH + "paystack/paystack.go",
     "Authorization: Bearer {s}  # paystack", s, "paystack reference T" + r(DIG, 12))
s = "rzp_live_" + rmix(AN, 14)
cred("Razorpay key ID", TH + "razorpay/razorpay.go",
     "RAZORPAY_KEY_ID={s}\nRAZORPAY_KEY_SECRET=" + rmix(AN, 24), s, "razorpay order_" + rmix(AN, 14))
s = "sk_" + uuid4()
cred("Checkout.com secret key", TH + "checkout/checkout.go",
     "CHECKOUT_SECRET_KEY={s}", s, "checkout payment pay_" + r(LAN, 26))
s = "live_" + rmix(B64URL, 40)
cred("GoCardless access token", GL + "gocardless.go",
     "GOCARDLESS_ACCESS_TOKEN={s}", s, "GOCARDLESS_ENVIRONMENT=live")
s = "access-production-" + uuid4()
cred("Plaid access token", TH + "plaidkey/plaidkey.go",
     "plaid access_token: {s}", s, "plaid request_id: " + r(AN, 15))
s = r(HEX, 30)
cred("Plaid secret", TH + "plaidkey/plaidkey.go",
     "PLAID_SECRET={s}", s, "PLAID_CLIENT_ID=" + r(HEX, 24) + "  # client id alone is not secret")
kid = uuid4()
ec = openssl_key(["ecparam", "-name", "prime256v1", "-genkey", "-noout"])
cred("Coinbase CDP API key (EC private key)", TH + "coinbase/coinbase.go",
     '{{"name": "organizations/' + uuid4() + '/apiKeys/' + kid + '", "privateKey": "{s}"}}', ec.replace("\n", "\\n"),
     '{"name": "organizations/' + uuid4() + '/apiKeys/' + kid + '", "privateKey": ""}',
     note="real freshly generated P-256 key, JSON-escaped")
s = "shippo_live_" + r(HEX, 40)
cred("Shippo API token", GL + "shippo.go",
     "Authorization: ShippoToken {s}", s, "Authorization: ShippoToken <API_TOKEN>")
s = "EZAK" + r(LAN, 54)
cred("EasyPost API key", GL + "easypost.go",
     "EASYPOST_API_KEY={s}", s, "EASYPOST_API_KEY=EZAK...")

# ---------------------------------------------------------------- messaging
team, bot = r(DIG, 11), r(DIG, 13)
s = f"xoxb-{team}-{bot}-" + rmix(AN, 24)
cred("Slack bot token", "https://docs.slack.dev/authentication/tokens",
     "SLACK_BOT_TOKEN={s}", s, "SLACK_BOT_TOKEN=xoxb-your-bot-token")
s = f"xoxp-{team}-{r(DIG, 11)}-{r(DIG, 13)}-" + r(HEX, 32)
cred("Slack user token", "https://docs.slack.dev/authentication/tokens",
     "Authorization: Bearer {s}", s, "Authorization: Bearer xoxp-...")
s = f"xapp-1-A{r(UAN, 10)}-{r(DIG, 13)}-" + r(HEX, 64)
cred("Slack app-level token", GL + "slack.go",
     "SLACK_APP_TOKEN={s}", s, "SLACK_APP_ID=A" + r(UAN, 10))
s = "xoxe.xoxp-1-" + rmix(UAN, 163)
cred("Slack configuration access token", GL + "slack.go",
     "\"access_token\": \"{s}\"", s, "\"access_token\": \"xoxe.xoxp-1-...\"")
s = "xoxe-1-" + rmix(UAN, 146)
cred("Slack configuration refresh token", GL + "slack.go",
     "\"refresh_token\": \"{s}\"", s, "\"refresh_token\": \"\"")
s = f"xoxa-2-{team}-{r(DIG, 12)}-" + r(HEX, 32)
cred("Slack workspace access token (legacy xoxa)", TH + "slack/slack.go",
     "token={s}", s, "token=xoxa-2-<workspace token>")
s = f"xoxc-{team}-{r(DIG, 12)}-{r(DIG, 13)}-" + r(HEX, 64)
cred("Slack web client session token (xoxc)", "https://github.com/emtunc/SlackPirate/issues/61",
     "SLACK_MCP_XOXC_TOKEN={s}", s, "SLACK_MCP_XOXC_TOKEN=xoxc-...")
s = "https://hooks.slack.com/services/T" + r(UAN, 10) + "/B" + r(UAN, 10) + "/" + rmix(AN, 24)
cred("Slack incoming webhook URL", TH + "slackwebhook/slackwebhook.go",
     "curl -X POST -H 'Content-type: application/json' --data '{{\"text\":\"deploy done\"}}' {s}", s,
     "curl -X POST -H 'Content-type: application/json' --data '{\"text\":\"deploy done\"}' https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX")
s = "https://hooks.slack.com/workflows/T" + r(UAN, 10) + "/A" + r(UAN, 10) + "/" + r(DIG, 18) + "/" + rmix(AN, 24)
cred("Slack workflow webhook URL", TH + "slackwebhook/slackwebhook.go",
     "WEBHOOK_URL={s}", s, "WEBHOOK_URL=https://hooks.slack.com/workflows/...")
uid = str(R.randint(10**17, 10**18 - 1))
s = b64url(uid.encode()) + "." + rmix(B64URL, 6) + "." + rmix(B64URL, 38)
cred("Discord bot token", TH + "discordbottoken/discordbottoken.go",
     "DISCORD_TOKEN={s}", s, "DISCORD_CLIENT_ID=" + uid,
     note="first segment is base64 of the bot's numeric user id (computed)")
s = "https://discord.com/api/webhooks/" + str(R.randint(10**18, 2 * 10**18)) + "/" + rmix(B64URL, 68)
cred("Discord webhook URL", TH + "discordwebhook/discordwebhook.go",
     "DISCORD_WEBHOOK={s}", s, "see https://discord.com/developers/docs/resources/webhook for the webhook API")
s = r(DIG, 10) + ":AA" + rmix(B64URL, 33)
cred("Telegram bot token", TH + "telegrambottoken/telegrambottoken.go",
     "curl https://api.telegram.org/bot{s}/getMe", s,
     "curl https://api.telegram.org/bot<token>/getMe")
s = "SK" + r(HEX, 32)
cred("Twilio API key SID", GL + "twilio.go",
     "TWILIO_API_KEY={s}\nTWILIO_API_SECRET=" + rmix(AN, 32), s, "TWILIO_MESSAGING_SERVICE_SID=MG" + r(HEX, 32),
     note="SK... is the key SID; the paired secret is also sensitive")
s = r(HEX, 32)
cred("Twilio auth token", TH + "twilio/twilio.go",
     "client = Client('AC" + r(HEX, 32) + "', '{s}')", s, "client = Client(os.environ['TWILIO_ACCOUNT_SID'], os.environ['TWILIO_AUTH_TOKEN'])")
s = "SG." + rmix(B64URL, 22) + "." + rmix(B64URL, 43)
cred("SendGrid API key", GL + "sendgrid.go",
     "SENDGRID_API_KEY={s}", s, "SENDGRID_API_KEY=SG.xxxxxxxxxxxxxxxxxxxxxx.xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx")
s = r(HEX, 32) + "-" + r(HEX, 8) + "-" + r(HEX, 8)
cred("Mailgun private API key", TH + "mailgun/mailgun.go",
     "curl -s --user 'api:{s}' https://api.mailgun.net/v3/mg.example.org/messages", s,
     "curl -s --user 'api:YOUR_API_KEY' https://api.mailgun.net/v3/mg.example.org/messages")
s = "key-" + r(HEX, 32)
cred("Mailgun API key (legacy key-)", GL + "mailgun.go",
     "MAILGUN_API_KEY={s}", s, "MAILGUN_DOMAIN=mg.example.org")
s = r(HEX, 32) + "-us" + str(R.randint(1, 21))
cred("Mailchimp API key", GL + "mailchimp.go",
     "MAILCHIMP_API_KEY={s}", s, "MAILCHIMP_SERVER_PREFIX=us6")
s = uuid4()
cred("Postmark server API token", TH + "postmark/postmark.go",
     "X-Postmark-Server-Token: {s}", s, "X-Postmark-Server-Token: POSTMARK_API_TEST")
s = "md-" + rmix(B64URL, 22)
cred("Mandrill (Mailchimp Transactional) API key", TH + "mandrill/mandrill.go",
     "mandrill_client = MailchimpTransactional.Client('{s}')", s, "mandrill_client = MailchimpTransactional.Client(MANDRILL_KEY)",
     note="newer keys carry an md- prefix; legacy keys are 22 chars without it")
s = "xkeysib-" + r(HEX, 64) + "-" + rmix(AN, 16)
cred("Brevo (Sendinblue) API key", GL + "sendinblue.go",
     "api-key: {s}", s, "api-key: xkeysib-...")
s = "re_" + rmix(B64URL, 32)
cred("Resend API key", "https://resend.com/docs/dashboard/api-keys/introduction",
     "RESEND_API_KEY={s}", s, "RESEND_API_KEY=re_123456789", note="UNSURE of length after re_")
s = "https://acme.webhook.office.com/webhookb2/" + uuid4() + "@" + uuid4() + "/IncomingWebhook/" + r(HEX, 32) + "/" + uuid4()
cred("Microsoft Teams incoming webhook URL", TH + "microsoftteamswebhook/v1/microsoftteamswebhook.go",
     "TEAMS_WEBHOOK_URL={s}", s, "TEAMS_WEBHOOK_URL=https://acme.webhook.office.com/webhookb2/<id>")
s = "KEY" + rmix(B64URL, 55)
cred("Telnyx API key", TH + "telnyx/telnyx.go",
     "TELNYX_API_KEY={s}", s, "TELNYX_PUBLIC_KEY=" + rmix(B64, 44))
s = r(AN, 25)
cred("MessageBird API key", GL + "messagebird.go",
     "messagebird_access_key: {s}", s, "messagebird originator: AcmeShop")

# ---------------------------------------------------------------- SaaS / dev tools
s = "1/" + r(DIG, 16) + ":" + r(HEX, 32)
cred("Asana personal access token", TH + "asanapersonalaccesstoken/asanapersonalaccesstoken.go",
     "ASANA_ACCESS_TOKEN={s}", s, "ASANA_WORKSPACE_GID=" + r(DIG, 16))
s = "2/" + r(DIG, 16) + "/" + r(DIG, 16) + ":" + r(HEX, 32)
cred("Asana personal access token (v2)", TH + "asanapersonalaccesstoken/asanapersonalaccesstoken.go",
     "Authorization: Bearer {s}", s, "Asana task https://app.asana.com/0/" + r(DIG, 16) + "/" + r(DIG, 16))
s = "ntn_" + r(DIG, 11) + rmix(AN, 35)
cred("Notion integration token (ntn_)", "https://developers.notion.com/reference/authentication",
     "NOTION_TOKEN={s}", s, "NOTION_DATABASE_ID=" + r(HEX, 32),
     note="UNSURE of exact ntn_ body length (~46)")
s = "secret_" + rmix(AN, 43)
cred("Notion integration token (legacy secret_)", TH + "notion/notion.go",
     "NOTION_API_KEY={s}", s, "NOTION_API_KEY=secret_...")
s = "lin_api_" + rmix(AN, 40)
cred("Linear API key", GL + "linear.go",
     "Authorization: {s}", s, "Linear issue ENG-" + r(DIG, 4))
s = "pat" + rmix(AN, 14) + "." + r(HEX, 64)
cred("Airtable personal access token", GL + "airtable.go",
     "AIRTABLE_API_KEY={s}", s, "AIRTABLE_BASE_ID=app" + rmix(AN, 14))
s = "figd_" + rmix(B64URL, 40)
cred("Figma personal access token", TH + "figmapersonalaccesstoken/v2/figmapersonalaccesstoken_v2.go",
     "X-Figma-Token: {s}", s, "figma file key " + rmix(AN, 22))
s = "00" + rmix(B64URL, 40)
cred("Okta API token", GL + "okta.go",
     "Authorization: SSWS {s}  # acme.okta.com", s, "OKTA_ORG_URL=https://acme.okta.com")
s = rmix(B64URL, 64)
cred("Auth0 client secret", TH + "auth0oauth/auth0oauth.go",
     "AUTH0_DOMAIN=acme.eu.auth0.com\nAUTH0_CLIENT_SECRET={s}", s, "AUTH0_CLIENT_ID=" + rmix(AN, 32))
s = jwt({"iss": "https://acme.eu.auth0.com/", "sub": rmix(AN, 32) + "@clients", "aud": "https://acme.eu.auth0.com/api/v2/", "iat": 1760000000, "exp": 1760086400, "gty": "client-credentials"})
cred("Auth0 Management API token (JWT)", TH + "auth0managementapitoken/auth0managementapitoken.go",
     "curl -H 'Authorization: Bearer {s}' https://acme.eu.auth0.com/api/v2/users", s,
     "curl -H 'Authorization: Bearer MGMT_API_ACCESS_TOKEN' https://acme.eu.auth0.com/api/v2/users")
s = "sntryu_" + r(HEX, 64)
cred("Sentry user auth token", GL + "sentry.go",
     "SENTRY_AUTH_TOKEN={s}", s, "SENTRY_DSN=https://" + r(HEX, 32) + "@o" + r(DIG, 6) + ".ingest.sentry.io/" + r(DIG, 7),
     note="a DSN's public key part is designed to be public")
pl = base64.b64encode(json.dumps({"iat": 1760000000.1, "url": "https://sentry.io", "region_url": "https://us.sentry.io", "org": "acme"}, separators=(",", ":")).encode()).decode().rstrip("=")
s = "sntrys_" + pl + "_" + rmix(AN + "+/", 43)
cred("Sentry organization auth token", GL + "sentry.go",
     "sentry-cli --auth-token {s} releases new 1.4.2", s, "sentry-cli --auth-token $SENTRY_AUTH_TOKEN releases new 1.4.2",
     note="middle segment is base64 JSON with iat/url/region_url (computed)")
s = r(HEX, 32)
cred("Datadog API key", TH + "datadogtoken/datadogtoken.go",
     "DD_API_KEY={s}", s, "DD_SITE=datadoghq.eu")
s = r(HEX, 40)
cred("Datadog application key", TH + "datadogtoken/datadogtoken.go",
     "DD_APP_KEY={s}", s, "dd trace_id " + r(DIG, 19))
s = "NRAK-" + rmix(UAN, 27)
cred("New Relic user API key", GL + "newrelic.go",
     "NEW_RELIC_API_KEY={s}", s, "NEW_RELIC_ACCOUNT_ID=" + r(DIG, 7))
s = r(HEX, 36) + "NRAL"
cred("New Relic ingest license key", "https://docs.newrelic.com/docs/apis/intro-apis/new-relic-api-keys/",
     "license_key: {s}", s, "app_name: checkout-service",
     note="license keys are 40 chars ending in NRAL")
s = "NRJS-" + r(HEX, 19)
cred("New Relic browser ingest key", GL + "newrelic.go",
     "NREUM.loader_config={{licenseKey:\"{s}\"}}", s, "NREUM.info={beacon:\"bam.nr-data.net\"}")
s = "glsa_" + rmix(AN, 32) + "_" + r(HEX, 8)
cred("Grafana service account token", GL + "grafana.go",
     "GRAFANA_TOKEN={s}", s, "GRAFANA_URL=https://acme.grafana.net",
     note="trailing 8 hex is a CRC32 checksum; not recomputed here")
s = "glc_" + base64.b64encode(json.dumps({"o": r(DIG, 6), "n": "stack-" + r(DIG, 6) + "-integration-deploy", "k": rmix(AN, 24), "m": {"r": "prod-eu-west-2"}}, separators=(",", ":")).encode()).decode()
cred("Grafana Cloud access policy token", GL + "grafana.go",
     "GRAFANA_CLOUD_TOKEN={s}", s, "GRAFANA_CLOUD_STACK=acme", note="payload is base64 JSON (computed)")
s = "eyJrIjoi" + rmix(AN, 80)
cred("Grafana API key (legacy)", GL + "grafana.go",
     "Authorization: Bearer {s}", s, "Authorization: Bearer <grafana api key>")
s = "u+" + rmix(B64URL, 18)
cred("PagerDuty API key", TH + "pagerdutyapikey/pagerdutyapikey.go",
     "Authorization: Token token={s}  # pagerduty", s, "pagerduty incident P" + r(UAN, 6))
s = r(HEX, 32)
cred("PagerDuty Events integration key", "https://developer.pagerduty.com/docs/events-api-v2/overview/",
     "{{\"routing_key\": \"{s}\", \"event_action\": \"trigger\"}}", s, "{\"routing_key\": \"<integration key>\", \"event_action\": \"trigger\"}")
s = "dt0c01." + rmix(UAN, 24) + "." + rmix(UAN, 64)
cred("Dynatrace API token", GL + "dynatrace.go",
     "Authorization: Api-Token {s}", s, "Authorization: Api-Token dt0c01.ABC123.XYZ")
s = "dp.pt." + rmix(AN, 43)
cred("Doppler personal token", GL + "doppler.go",
     "DOPPLER_TOKEN={s}", s, "DOPPLER_PROJECT=backend")
s = "dp.st.prd." + rmix(AN, 43)
cred("Doppler service token", TH + "doppler/doppler.go",
     "doppler run --token {s} -- ./server", s, "doppler run --config prd -- ./server")
s = "pul-" + r(HEX, 40)
cred("Pulumi access token", GL + "pulumi.go",
     "PULUMI_ACCESS_TOKEN={s}", s, "PULUMI_BACKEND_URL=s3://acme-pulumi-state")
s = "hvs." + rmix(B64URL, 91)
cred("HashiCorp Vault service token", GL + "hashicorp_vault.go",
     "VAULT_TOKEN={s}", s, "VAULT_ADDR=https://vault.internal:8200")
s = "hvb." + rmix(B64URL, 150)
cred("HashiCorp Vault batch token", GL + "hashicorp_vault.go",
     "X-Vault-Token: {s}", s, "X-Vault-Namespace: admin")
s = "s." + rmix(AN, 24)
cred("HashiCorp Vault token (legacy s.)", GL + "hashicorp_vault.go",
     "export VAULT_TOKEN={s}", s, "export VAULT_TOKEN=$(cat ~/.vault-token)")
s = rmix(LAN, 14) + ".atlasv1." + rmix(B64URL, 67)
cred("Terraform Cloud / HCP Terraform API token", GL + "hashicorp.go",
     "credentials \"app.terraform.io\" {{ token = \"{s}\" }}", s, "credentials \"app.terraform.io\" { token = var.tfc_token }")
s = "ops_eyJ" + rmix(B64, 300) + "=="
cred("1Password service account token", GL + "1password.go",
     "OP_SERVICE_ACCOUNT_TOKEN={s}", s, "OP_SERVICE_ACCOUNT_TOKEN=ops_...")
s = "A3-" + rmix(UAN, 6) + "-" + rmix(UAN, 6) + "-" + rmix(UAN, 5) + "-" + rmix(UAN, 5) + "-" + rmix(UAN, 5) + "-" + rmix(UAN, 5)
cred("1Password account secret key", GL + "1password.go",
     "Secret Key: {s}", s, "Secret Key: A3-XXXXXX-XXXXXX-XXXXX-XXXXX-XXXXX-XXXXX")
s = gh_style("npm_")
cred("npm access token", "https://github.blog/2021-09-23-announcing-npms-new-access-token-format/",
     "//registry.npmjs.org/:_authToken={s}", s, "//registry.npmjs.org/:_authToken=${NPM_TOKEN}",
     note="last 6 chars are base62(CRC32 of the 30 random chars); computed")
s = uuid4()
cred("npm access token (legacy UUID)", TH + "npmtoken/npmtoken.go",
     "//registry.npmjs.org/:_authToken={s}", s, "\"integrity\": \"sha512-" + base64.b64encode(os.urandom(64)).decode() + "\"")
s = macaroon_pypi()
cred("PyPI API token", "https://pypi.org/project/pypitoken/",
     "[pypi]\n  username = __token__\n  password = {s}", s, "[pypi]\n  username = __token__\n  password = pypi-<token>",
     note="macaroon v2 binary (location pypi.org, identifier, caveat, 32-byte signature) base64url-encoded, so it starts pypi-AgEIcHlwaS5vcmc; structure computed")
s = "rubygems_" + r(HEX, 48)
cred("RubyGems API key", GL + "rubygems.go",
     "GEM_HOST_API_KEY={s}", s, "gem push pkg/acme-1.2.0.gem")
s = "oy2" + r(LAN, 43)
cred("NuGet API key", TH + "nugetapikey/nugetapikey.go",
     "dotnet nuget push Acme.1.2.0.nupkg --api-key {s} --source nuget.org", s,
     "dotnet nuget push Acme.1.2.0.nupkg --api-key %NUGET_API_KEY% --source nuget.org",
     note="nuget.org keys are 46 chars starting oy2")
s = "dckr_pat_" + rmix(B64URL, 27)
cred("Docker Hub personal access token", TH + "dockerhub/v2/dockerhub.go",
     "echo {s} | docker login -u acmebot --password-stdin", s, "echo $DOCKERHUB_TOKEN | docker login -u acmebot --password-stdin")
s = "dckr_oat_" + rmix(B64URL, 32)
cred("Docker Hub organization access token", TH + "dockerhub/v2/dockerhub.go",
     "DOCKER_PASSWORD={s}", s, "DOCKER_USERNAME=acme")
s = "AKCp" + rmix(AN, 69)
cred("JFrog Artifactory API key", GL + "artifactory.go",
     "X-JFrog-Art-Api: {s}", s, "X-JFrog-Art-Api: ${ARTIFACTORY_API_KEY}")
s = "cmVmdGtu" + rmix(AN, 56)
cred("JFrog Artifactory reference token", TH + "artifactoryreferencetoken/artifactoryreferencetoken.go",
     "Authorization: Bearer {s}  # acme.jfrog.io", s, "ARTIFACTORY_URL=https://acme.jfrog.io/artifactory")
s = "dapi" + r(HEX, 32)
cred("Databricks personal access token", GL + "databricks.go",
     "DATABRICKS_HOST=https://adb-" + r(DIG, 16) + ".7.azuredatabricks.net\nDATABRICKS_TOKEN={s}", s,
     "DATABRICKS_HOST=https://adb-" + r(DIG, 16) + ".7.azuredatabricks.net")
s = "Zq" + rmix(B64URL, 20) + "!" + r(DIG, 3)
cred("Snowflake password in connection string", TH + "snowflake/snowflake.go",
     "snowflake://etl_user:{s}@xy12345.eu-west-1/ANALYTICS/PUBLIC?warehouse=ETL_WH", s,
     "snowflake://etl_user@xy12345.eu-west-1/ANALYTICS/PUBLIC?warehouse=ETL_WH&authenticator=externalbrowser")
s = "sbp_" + r(HEX, 40)
cred("Supabase personal access token", TH + "supabasetoken/supabasetoken.go",
     "SUPABASE_ACCESS_TOKEN={s}", s, "SUPABASE_PROJECT_REF=" + r(LO, 20))
s = "sb_secret_" + rmix(B64URL, 22) + "_" + rmix(AN, 8)
cred("Supabase secret API key", "https://supabase.com/docs/guides/api/api-keys",
     "SUPABASE_SECRET_KEY={s}", s, "SUPABASE_PUBLISHABLE_KEY=sb_publishable_" + rmix(B64URL, 22) + "_" + rmix(AN, 8),
     note="sb_secret_<22 base64url>_<8 alnum> from observed keys (the 8-char tail looks like a checksum; not computed); sb_publishable_ keys are public")
s = jwt({"iss": "supabase", "ref": r(LO, 20), "role": "service_role", "iat": 1700000000, "exp": 2015576000})
cred("Supabase service_role key (JWT)", "https://supabase.com/docs/guides/api/api-keys",
     "SUPABASE_SERVICE_ROLE_KEY={s}", s, "SUPABASE_URL=https://" + r(LO, 20) + ".supabase.co")
s = "pscale_tkn_" + rmix(B64URL, 43)
cred("PlanetScale service token", GL + "planetscale.go",
     "PLANETSCALE_SERVICE_TOKEN={s}", s, "PLANETSCALE_SERVICE_TOKEN_ID=" + r(LAN, 12))
s = "pscale_pw_" + rmix(B64URL, 43)
cred("PlanetScale database password", GL + "planetscale.go",
     "DATABASE_URL=mysql://" + r(LAN, 12) + ":{s}@aws.connect.psdb.cloud/shop?sslaccept=strict", s,
     "DATABASE_URL=mysql://user:password@aws.connect.psdb.cloud/shop?sslaccept=strict")
s = rmix(AN, 24)
cred("MongoDB Atlas connection string password", TH + "mongodb/mongodb.go",
     "MONGODB_URI=mongodb+srv://app_rw:{s}@cluster0.ab1cd.mongodb.net/shop?retryWrites=true&w=majority", s,
     "MONGODB_URI=mongodb+srv://app_rw:<db_password>@cluster0.ab1cd.mongodb.net/shop?retryWrites=true&w=majority")
s = uuid4()
cred("MongoDB Atlas API private key", "https://www.mongodb.com/docs/atlas/configure-api-access/",
     "atlas config set private_api_key {s}", s, "atlas config set public_api_key " + r(LO, 8))
s = "CFPAT-" + rmix(B64URL, 43)
cred("Contentful personal access token", TH + "contentfulpersonalaccesstoken/contentfulpersonalaccesstoken.go",
     "CONTENTFUL_MANAGEMENT_TOKEN={s}", s, "CONTENTFUL_SPACE_ID=" + r(LAN, 12))
s = rmix(B64URL, 43)
cred("Contentful delivery API token", GL + "contentful.go",
     "contentful_delivery_token: {s}", s, "contentful_environment: master")
s = r(HEX, 32)
cred("Algolia admin API key", TH + "algoliaadminkey/algoliaadminkey.go",
     "ALGOLIA_APP_ID=" + rmix(UAN, 10) + "\nALGOLIA_ADMIN_KEY={s}", s, "ALGOLIA_INDEX_NAME=products_prod")
s = "sk." + b64url(json.dumps({"u": "acme", "a": rmix(LAN, 25)}, separators=(",", ":")).encode()) + "." + rmix(B64URL, 22)
cred("Mapbox secret token", TH + "mapbox/mapbox.go",
     "MAPBOX_DOWNLOADS_TOKEN={s}", s, "MAPBOX_STYLE=mapbox://styles/mapbox/streets-v12",
     note="middle segment is base64 JSON {u,a} (computed)")
s = "pk." + b64url(json.dumps({"u": "acme", "a": rmix(LAN, 25)}, separators=(",", ":")).encode()) + "." + rmix(B64URL, 22)
cred("Mapbox public token", GL + "mapbox.go",
     "mapboxgl.accessToken = '{s}';", s, "mapboxgl.accessToken = MAPBOX_TOKEN;",
     note="pk. tokens are meant for browsers but gitleaks flags them; mask by default")
s = "PMAK-" + r(HEX, 24) + "-" + r(HEX, 34)
cred("Postman API key", GL + "postman.go",
     "X-Api-Key: {s}", s, "X-Api-Key: {{postman_api_key}}")
s = "tfp_" + rmix(AN, 44) + "_" + rmix(AN, 14)
cred("Typeform personal access token", TH + "typeform/v2/typeform.go",
     "Authorization: Bearer {s}", s, "typeform form id " + rmix(AN, 8))
s = "sl.u." + rmix(B64URL, 140)
cred("Dropbox short-lived access token", TH + "dropbox/dropbox.go",
     "DROPBOX_ACCESS_TOKEN={s}", s, "DROPBOX_APP_KEY=" + r(LAN, 15))
s = r(LAN, 11) + "AAAAAAAAAA" + rmix(B64URL, 43)
cred("Dropbox long-lived access token", GL + "dropbox.go",
     "dropbox_token: {s}", s, "dropbox_app_folder: /Apps/acme-backup")
s = base64.b64encode(("tok:" + uuid4().replace("-", "_") + ":1:0").encode()).decode()
assert s.startswith("dG9rO") and len(s) == 60
cred("Intercom access token", GL + "intercom.go",
     "Authorization: Bearer {s}  # intercom", s, "Intercom-Version: 2.11",
     note="Intercom tokens are base64 of 'tok:<uuid with _>:1:0' (60 chars ending =); computed")
s = "pat-na1-" + uuid4()
cred("HubSpot private app token", TH + "hubspot_apikey/v2/apikey.go",
     "Authorization: Bearer {s}", s, "HubSpot portal id " + r(DIG, 8))
s = rmix(B64URL, 40)
cred("Zendesk API token", GL + "zendesk.go",
     "curl https://acme.zendesk.com/api/v2/users.json -u agent@example.org/token:{s}", s,
     "curl https://acme.zendesk.com/api/v2/users.json -u agent@example.org/token:{api_token}")
s = "live_" + r(HEX, 35)
cred("Lob API key", GL + "lob.go",
     "LOB_API_KEY={s}", s, "LOB_PUBLISHABLE_KEY=live_pub_" + r(HEX, 31))
s = "phx_" + rmix(AN, 47)
cred("PostHog personal API key", TH + "posthog/posthog.go",
     "POSTHOG_PERSONAL_API_KEY={s}", s, "POSTHOG_PROJECT_API_KEY=phc_" + rmix(AN, 43),
     note="phc_ project keys are public write-only keys")
s = "api-" + uuid4()
cred("LaunchDarkly API access token", TH + "launchdarkly/launchdarkly.go",
     "LD_API_KEY={s}", s, "LD_CLIENT_SIDE_ID=" + r(HEX, 24))
s = "sgp_" + r(HEX, 16) + "_" + r(HEX, 40)
cred("Sourcegraph access token", GL + "sourcegraph.go",
     "SRC_ACCESS_TOKEN={s}", s, "SRC_ENDPOINT=https://sourcegraph.example.org")
s = "rdme_" + r(LAN, 70)
cred("ReadMe API key", GL + "readme.go",
     "README_API_KEY={s}", s, "README_VERSION=v2.0")
s = "pnu_" + rmix(AN, 36)
cred("Prefect API key", GL + "prefect.go",
     "PREFECT_API_KEY={s}", s, "PREFECT_API_URL=https://api.prefect.cloud/api/accounts/" + uuid4())
s = "ico-" + rmix(AN, 32)
cred("Infracost API key", GL + "infracost.go",
     "INFRACOST_API_KEY={s}", s, "infracost breakdown --path .")
s = "CLOJARS_" + r(LAN, 60)
cred("Clojars deploy token", GL + "clojars.go",
     "CLOJARS_PASSWORD={s}", s, "CLOJARS_USERNAME=acme")
s = "AGE-SECRET-KEY-1" + r("QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L", 58)
cred("age secret key", GL + "age.go",
     "# created: 2026-01-01T00:00:00Z\n{s}", s, "# public key: age1" + r("qpzry9x8gf2tvdw0s3jn54khce6mua7l", 58))
s = "sha256~" + rmix(B64URL, 43)
cred("OpenShift user token", GL + "openshift.go",
     "oc login --token={s} --server=https://api.ocp.example.org:6443", s,
     "image digest sha256:" + r(HEX, 64))
s = "4b1d" + rmix(AN, 38)
cred("ClickHouse Cloud API secret", GL + "clickhouse.go",
     "CLICKHOUSE_KEY_SECRET={s}", s, "CLICKHOUSE_KEY_ID=" + rmix(AN, 20))
s = "2" + rmix(AN, 26) + "_" + r(DIG, 1) + rmix(AN, 20)
cred("ngrok authtoken", TH + "ngrok/ngrok.go",
     "ngrok config add-authtoken {s}", s, "ngrok http 8080")
s = "EAAC" + rmix(AN, 150)
cred("Facebook / Meta access token", GL + "facebook.go",
     "curl 'https://graph.facebook.com/v19.0/me?access_token={s}'", s,
     "curl 'https://graph.facebook.com/v19.0/me?access_token={access-token}'")
s = "A" * 22 + rmix(AN, 60) + "%3D" + rmix(AN, 40)
cred("Twitter / X bearer token", GL + "twitter.go",
     "TWITTER_BEARER_TOKEN={s}", s, "TWITTER_API_KEY=YOUR_API_KEY")
s = r(HEX, 40)
cred("Meraki API key", GL + "meraki.go",
     "X-Cisco-Meraki-API-Key: {s}", s, "Meraki network id L_" + r(DIG, 18))
s = r(DIG, 6) + "-" + uuid4()
cred("Figma personal access token (legacy)", TH + "figmapersonalaccesstoken/v1/figmapersonalaccesstoken.go",
     "FIGMA_TOKEN={s}", s, "FIGMA_FILE=" + rmix(AN, 22))
s = "sqco_" + rmix(AN, 59)
cred("SonarCloud token (sqco_)", TH + "sonarcloud/v2/sonarcloud.go",
     "SONAR_TOKEN={s}", s, "SONAR_ORGANIZATION=acme")

# ---------------------------------------------------------------- generic: private keys
rsa1 = openssl_key(["genrsa", "-traditional", "1024"]) if True else ""
if "BEGIN RSA PRIVATE KEY" not in rsa1:
    rsa1 = openssl_key(["genrsa", "1024"])
add("PEM RSA private key (PKCS#1)", "credential", GL + "privatekey.go",
    "Here is the deploy key, please check why ssh rejects it:\n" + rsa1 + "\nthanks", rsa1,
    "-----BEGIN PUBLIC KEY-----\n" + pem_body(162) + "\n-----END PUBLIC KEY-----")
add("PEM PKCS#8 private key", "credential", GL + "privatekey.go",
    "tls.key: |\n" + rsa_pk, rsa_pk,
    "-----BEGIN CERTIFICATE-----\n" + pem_body(600) + "\n-----END CERTIFICATE-----")
add("PEM EC private key (SEC1)", "credential", GL + "privatekey.go",
    "signing key for JWTs:\n" + ec, ec,
    "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----")
osh = ssh_key()
add("OpenSSH private key", "credential", GL + "privatekey.go",
    "cat ~/.ssh/id_ed25519\n" + osh, osh,
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI" + rmix(B64, 43) + " deploy@ci")
enc = openssl_key(["genpkey", "-algorithm", "ed25519", "-aes-128-cbc", "-pass", "pass:" + r(AN, 16)])
add("PEM encrypted private key (PKCS#8)", "credential", GL + "privatekey.go",
    "key.pem:\n" + enc, enc, "openssl pkcs8 -topk8 -in key.pem -out key.enc.pem  # converts to -----BEGIN ENCRYPTED PRIVATE KEY-----")
dsa = "-----BEGIN DSA PRIVATE KEY-----\n" + pem_body(446) + "\n-----END DSA PRIVATE KEY-----"
add("PEM DSA private key", "credential", GL + "privatekey.go",
    "legacy_host_key = \"\"\"\n" + dsa + "\n\"\"\"", dsa, "ssh-keygen -t dsa is no longer supported by OpenSSH 9.8")
pgp = "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\n" + pem_body(900) + "\n=" + rmix(B64, 4) + "\n-----END PGP PRIVATE KEY BLOCK-----"
add("PGP private key block", "credential", GL + "privatekey.go",
    "gpg --export-secret-keys --armor ops@example.org\n" + pgp, pgp,
    "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n" + pem_body(300) + "\n-----END PGP PUBLIC KEY BLOCK-----")
osh_json = osh.replace("\n", "\\n")
add("OpenSSH private key (JSON-escaped)", "credential", GL + "privatekey.go",
    '{"ssh_private_key": "' + osh_json + '"}', osh_json, '{"ssh_public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI' + rmix(B64, 43) + '"}',
    note="same key as it appears inside a JSON string with \\n escapes")

# ---------------------------------------------------------------- generic: JWT, URLs, basic auth
s = jwt({"sub": uuid4(), "email": "jdoe@example.org", "role": "admin", "iat": 1760000000, "exp": 1760003600})
add("JSON Web Token (bearer)", "credential", GL + "jwt.go",
    "Authorization: Bearer " + s, s, "Authorization: Bearer <JWT>")
s = jwt({"sub": "svc-billing", "scope": "read:invoices", "iat": 1760000000})
add("JSON Web Token in cookie", "credential", GL + "jwt.go",
    "Cookie: session=" + s + "; Path=/; HttpOnly", s, "Cookie: theme=dark; lang=en")
for scheme, user, host, name in (("postgres", "app", "db.internal:5432/orders", "PostgreSQL"),
                                 ("mysql", "root", "10.0.3.7:3306/shop", "MySQL"),
                                 ("redis", "default", "cache.internal:6379/0", "Redis"),
                                 ("amqp", "svc", "mq.internal:5672/%2F", "AMQP/RabbitMQ"),
                                 ("https", "deploy", "nexus.example.org/repository/maven-releases/", "HTTPS")):
    pw = rmix(AN, 12) + R.choice("!*-_.~") + rmix(AN, 6)
    add(f"Password in {name} URL", "credential", TH + ("redis/redis.go" if scheme == "redis" else "uri"),
        f"{name.split('/')[0].upper()}_URL={scheme}://{user}:{pw}@{host}" if scheme != "https" else f"curl -O {scheme}://{user}:{pw}@{host}acme-1.2.jar",
        pw,
        f"{name.split('/')[0].upper()}_URL={scheme}://{user}@{host}" if scheme != "https" else f"curl -O {scheme}://{host}acme-1.2.jar",
        note="mask the password component; user and host may stay")
pw = rmix(AN, 10) + "%40" + rmix(AN, 6)
add("Password in URL (percent-encoded)", "credential", TH + "uri",
    "git clone https://jdoe:" + pw + "@git.example.org/acme/api.git", pw,
    "git clone https://jdoe:${GIT_PASSWORD}@git.example.org/acme/api.git")
cr = "ci-bot:" + rmix(AN, 20)
s = base64.b64encode(cr.encode()).decode()
add("HTTP Basic auth header", "credential", GL + "curl.go",
    "Authorization: Basic " + s, s, "Authorization: Basic <base64 of user:password>",
    note="base64 of user:password (computed)")
pw = rmix(AN, 16)
add("curl -u user:password", "credential", GL + "curl.go",
    "curl -u admin:" + pw + " https://registry.example.org/v2/_catalog", pw,
    "curl -u admin:changeme https://registry.example.org/v2/_catalog")
pw = rmix(AN, 14) + "#" + r(DIG, 2)
add("Password assignment in config", "credential", "https://github.com/gitleaks/gitleaks/blob/master/cmd/generate/config/rules/generic.go",
    "spring.datasource.password=" + pw, pw, "spring.datasource.password=${DB_PASSWORD}")
s = rmix(AN + "+/", 40)
add("Generic bearer token in curl", "credential", GL + "curl.go",
    "curl -H 'Authorization: Bearer " + s + "' https://internal-api.example.org/v1/reports", s,
    "curl -H 'Authorization: Bearer $TOKEN' https://internal-api.example.org/v1/reports")
s = "django-insecure-" + rmix(AN + "!@#%^&*(-_=+)", 50)
add("Django SECRET_KEY", "credential", "https://docs.djangoproject.com/en/stable/ref/settings/#secret-key",
    "SECRET_KEY = '" + s + "'", s, "SECRET_KEY = os.environ['DJANGO_SECRET_KEY']")
kube = base64.b64encode(os.urandom(24) + rmix(AN, 6).encode()).decode()
add("Kubernetes Secret data value", "credential", GL + "kubernetes.go",
    "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\ndata:\n  password: " + kube, kube,
    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: db\ndata:\n  host: ZGIuaW50ZXJuYWw=")

# ---------------------------------------------------------------- personal identifiers
PI = "personal"
cards = [("Visa", "4", 16), ("Mastercard (51-55)", "5" + str(R.randint(1, 5)), 16),
         ("Mastercard (2-series)", "27" + str(R.randint(0, 1)), 16), ("American Express", R.choice(["34", "37"]), 15),
         ("Discover", "6011", 16), ("JCB", "35" + str(R.randint(28, 89)), 16), ("UnionPay", "62" + r(DIG, 2), 16),
         ("Visa 19-digit", "4", 19), ("Maestro", "6759", 18), ("Diners Club", "36", 14)]
for name, pfx, ln in cards:
    n = luhn_complete(pfx, ln)
    assert luhn_ok(n)
    bad = n[:-1] + str((int(n[-1]) + 1) % 10)
    assert not luhn_ok(bad)
    if name == "Visa":
        pos, sec = f"card: {group4(n)}  exp 09/29  cvc 123", group4(n)
    elif name.startswith("American"):
        fm = f"{n[:4]} {n[4:10]} {n[10:]}"
        pos, sec = f"Amex on file: {fm}", fm
    elif name.startswith("Mastercard (2"):
        fm = "-".join(n[i:i + 4] for i in range(0, 16, 4))
        pos, sec = f"\"pan\": \"{fm}\"", fm
    else:
        pos, sec = f"{{\"card_number\": \"{n}\", \"holder\": \"J DOE\"}}", n
    add(f"Payment card number ({name})", PI, "ISO/IEC 7812-1 (Luhn mod 10); https://en.wikipedia.org/wiki/Payment_card_number",
        pos, sec, f"order reference {bad} (same length, fails Luhn)" if name != "Visa" else
        "tracking number 1Z" + r(UAN, 16) + "; test card 4242 4242 4242 424",
        note="passes Luhn (computed); negative fails Luhn or is too short")
ibans = [("DE", r(DIG, 8) + r(DIG, 10)), ("GB", "NWBK" + r(DIG, 6) + r(DIG, 8)), ("FR", r(DIG, 5) + r(DIG, 5) + r(UAN, 11) + r(DIG, 2)),
         ("NL", "ABNA" + r(DIG, 10)), ("ES", r(DIG, 20)), ("IT", R.choice(UP) + r(DIG, 10) + r(UAN, 12)),
         ("CH", r(DIG, 5) + r(UAN, 12)), ("BE", (lambda d: d + f"{(int(d) % 97) or 97:02d}")(r(DIG, 10))), ("PL", r(DIG, 24)), ("SE", r(DIG, 20))]
for cc, bban in ibans:
    ib = iban(cc, bban)
    bad = ib[:2] + f"{(int(ib[2:4]) + 1) % 100:02d}" + ib[4:]
    if iban_ok(bad):
        bad = ib[:2] + f"{(int(ib[2:4]) + 2) % 100:02d}" + ib[4:]
    assert not iban_ok(bad)
    if cc in ("DE", "FR", "NL"):
        pos, sec = f"Bitte überweisen an IBAN {group4(ib)} (Kontoinhaber J. Doe)" if cc == "DE" else f"IBAN: {group4(ib)}", group4(ib)
    else:
        pos, sec = f"\"iban\": \"{ib}\"", ib
    add(f"IBAN ({cc})", PI, "ISO 13616 (mod 97-10); https://www.swift.com/standards/data-standards/iban",
        pos, sec, f"\"iban\": \"{bad}\"  (check digits wrong, fails mod 97)",
        note="passes mod 97 (computed); negative has altered check digits")
while True:
    a = R.randint(1, 899)
    if a != 666:
        break
ssn = f"{a:03d}-{R.randint(1, 99):02d}-{R.randint(1, 9999):04d}"
add("US Social Security number", PI, "https://www.ssa.gov/employer/randomization.html",
    f"Employee SSN: {ssn}", ssn, "Employee SSN: 000-12-3456 (area 000 is never issued)",
    note="area not 000/666/9xx, group not 00, serial not 0000")
ssn2 = f"{R.randint(1, 665):03d}{R.randint(1, 99):02d}{R.randint(1, 9999):04d}"
add("US Social Security number (no dashes)", PI, "https://www.ssa.gov/employer/randomization.html",
    f"{{\"ssn\": \"{ssn2}\", \"dob\": \"1984-03-02\"}}", ssn2, "{\"ssn\": \"987-65-4320\"}  (reserved advertising range)")

with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "outside.json"), "w") as f:
    json.dump(V, f, indent=1, ensure_ascii=False)
    f.write("\n")
print(len(V), "entries")
