# A raw NATS client for the fleet's adversarial suite (the NATS client protocol, as its public
# docs give it: INFO / CONNECT / SUB / PUB / HPUB / MSG / HMSG / PING / PONG), with nothing of the
# gateway's: what an insider with bus access can do.
#
# argv: spy HOST PORT out.jsonl      subscribe to every subject (">") and write each message:
#                                     {"subject", "reply", "headers" (text or null), "payload" (hex)}
#       pub HOST PORT msgs.json      publish each {"subject", "headers" (text or null), "payload"
#                                     (hex)} and wait for the server's PONG
import json, socket, sys

mode, host, port, path = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
s = socket.create_connection((host, port), timeout=None if mode == "spy" else 10)
f = s.makefile("rb")
info = f.readline()
assert info.startswith(b"INFO"), info
s.sendall(b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"no_responders":false,"name":"adv-fleet-%s","lang":"python","version":"0"}\r\n' % mode.encode())


def read_msg(line):
    parts = line.split()
    if parts[0] == b"MSG":
        subj, sid = parts[1], parts[2]
        reply = parts[3] if len(parts) == 5 else None
        n = int(parts[-1])
        data = f.read(n + 2)[:-2]
        return subj, reply, None, data
    subj, sid = parts[1], parts[2]
    reply = parts[3] if len(parts) == 6 else None
    hl, tl = int(parts[-2]), int(parts[-1])
    data = f.read(tl + 2)[:-2]
    return subj, reply, data[:hl].decode("utf-8", "replace"), data[hl:]


if mode == "spy":
    out = open(path, "a")
    s.sendall(b"SUB > 1\r\nPING\r\n")
    while True:
        line = f.readline()
        if not line:
            break
        if line.startswith(b"PING"):
            s.sendall(b"PONG\r\n")
        elif line.startswith(b"MSG") or line.startswith(b"HMSG"):
            subj, reply, hdr, data = read_msg(line)
            out.write(json.dumps({"subject": subj.decode(), "reply": reply.decode() if reply else None, "headers": hdr, "payload": data.hex()}) + "\n")
            out.flush()
else:
    for m in json.load(open(path)):
        p = bytes.fromhex(m["payload"])
        subj = m["subject"].encode()
        if m.get("headers"):
            h = m["headers"].encode()
            s.sendall(b"HPUB %s %d %d\r\n%s%s\r\n" % (subj, len(h), len(h) + len(p), h, p))
        else:
            s.sendall(b"PUB %s %d\r\n%s\r\n" % (subj, len(p), p))
    s.sendall(b"PING\r\n")
    while True:
        line = f.readline()
        if not line or line.startswith(b"PONG"):
            break
        if line.startswith(b"-ERR"):
            print(line.decode().strip(), file=sys.stderr)
            sys.exit(1)
