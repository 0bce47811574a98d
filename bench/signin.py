#!/usr/bin/env python3
"""Signs a fresh local user in through the gateway's JSON API (password, then TOTP
enrolment) and prints the session cookie as a "Cookie: ..." header line for wrk.

Usage: signin.py ADDR HOST USERNAME PASSWORD TIER
ADDR is HOST:PORT (plaintext) or https://NAME:PORT (TLS, NAME sent as SNI, the
certificate is not checked: the bench's own self-signed one).
"""
import base64, hashlib, hmac, http.client, json, ssl, struct, sys, time


def totp(secret, at):
    key = base64.b32decode(secret.upper() + "=" * (-len(secret) % 8))
    digest = hmac.new(key, struct.pack(">Q", int(at // 30)), hashlib.sha1).digest()
    offset = digest[-1] & 15
    return "%06d" % ((struct.unpack(">I", digest[offset:offset + 4])[0] & 0x7FFFFFFF) % 1000000)


def call(addr, host, method, path, body, cookies):
    if addr.startswith("https://"):
        host_name, port = addr[len("https://"):].rsplit(":", 1)
        conn = http.client.HTTPSConnection(host_name, int(port), timeout=30,
                                           context=ssl._create_unverified_context())
    else:
        host_name, port = addr.rsplit(":", 1)
        conn = http.client.HTTPConnection(host_name, int(port), timeout=30)
    headers = {"Host": host, "Accept": "application/json"}
    if cookies:
        headers["Cookie"] = "; ".join("%s=%s" % kv for kv in cookies.items())
    if body is not None:
        body = json.dumps(body)
        headers["Content-Type"] = "application/json"
    conn.request(method, path, body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    for line in resp.headers.get_all("Set-Cookie") or []:
        name, _, rest = line.partition("=")
        cookies[name.strip()] = rest.split(";", 1)[0]
    if resp.status != 200:
        sys.exit("sign-in failed at %s %s: %s %s" % (method, path, resp.status, data[:200]))
    return json.loads(data)


def main():
    addr, host, username, password, tier = sys.argv[1:6]
    jar = {}
    step = call(addr, host, "POST", "/.portcullis/api/login", {"username": username, "password": password}, jar)
    if step.get("next") != "enrol":
        sys.exit("expected a first sign-in (enrol), got %r" % step)
    secret = call(addr, host, "GET", "/.portcullis/api/enrol", None, jar)["secret"]
    call(addr, host, "POST", "/.portcullis/api/enrol", {"code": totp(secret, time.time())}, jar)
    name = "__Host-portcullis-" + tier
    if not jar.get(name):
        sys.exit("no session cookie after enrolment")
    print("Cookie: %s=%s" % (name, jar[name]))


if __name__ == "__main__":
    main()
