# Held requests for the fleet's adversarial suite: one thread per marker, each an OpenAI chat
# completion (non-streaming) whose prompt names the hold keyword and its marker, through the
# gateway (the test runs this in its cgroup with the fakes' hosts file). Each prints one JSON
# line when its answer comes: {"marker", "status", "body"} (body cut to 300 characters).
#
# argv: cafile keyword marker... ; a marker may be a JSON object {"marker", "text", "model",
# "comm", "ua", "target", "auth"}: more prompt text, the request's model, the thread's name
# (PR_SET_NAME: what the gateway reads as the workload's comm), its User-Agent, its target
# (path and query), its Authorization value; "hold": false leaves the keyword out.
import ctypes, http.client, json, ssl, sys, threading

cafile, keyword = sys.argv[1], sys.argv[2]
lock = threading.Lock()


def one(arg):
    spec = json.loads(arg) if arg.startswith("{") else {"marker": arg}
    marker = spec["marker"]
    word = keyword if spec.get("hold", True) else ""
    prompt = ("%s %s %s" % (word, marker, spec.get("text", ""))).strip()
    if spec.get("comm"):
        ctypes.CDLL(None, use_errno=True).prctl(15, spec["comm"].encode()[:15], 0, 0, 0)
    body = json.dumps({"model": spec.get("model", "gpt-4o-mini"), "messages": [{"role": "user", "content": prompt}]})
    ctx = ssl.create_default_context(cafile=cafile)
    out = {"marker": marker}
    try:
        c = http.client.HTTPSConnection("api.openai.com", 443, context=ctx, timeout=900)
        h = {"Authorization": spec.get("auth", "Bearer sk-dummy-adv-fleet"), "Content-Type": "application/json"}
        if spec.get("ua"):
            h["User-Agent"] = spec["ua"]
        c.request("POST", spec.get("target", "/v1/chat/completions"), body=body, headers=h)
        r = c.getresponse()
        out["status"] = r.status
        out["body"] = r.read().decode("utf-8", "replace")[:300]
    except Exception as e:
        out["error"] = "%s: %s" % (type(e).__name__, e)
    with lock:
        print(json.dumps(out), flush=True)


ts = [threading.Thread(target=one, args=(a,)) for a in sys.argv[3:]]
for t in ts:
    t.start()
for t in ts:
    t.join()
