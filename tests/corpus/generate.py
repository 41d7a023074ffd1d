#!/usr/bin/env python3
"""Writes the malformed-request corpus: one file per case, named
STATUS-close|open-slug.http, holding the raw bytes to send. STATUS is the
documented answer (see README, "HTTP behaviour"); close/open says whether the
server closes the connection after it (it closes whenever the framing of what
follows is in doubt). Run it from anywhere; it rewrites every .http file here.
tests/corpus.rs sends each file whole, one byte at a time and split at every
offset, with a canary request behind it that must never be answered after a
refusal that closes."""
import os, re

HERE = os.path.dirname(os.path.abspath(__file__))
cases = []

def case(status, close, slug, data):
    if isinstance(data, str):
        # Latin-1 keeps each char one byte (control bytes, obs-text); anything
        # beyond goes as UTF-8.
        data = data.encode("latin-1") if max(map(ord, data), default=0) < 256 else data.encode("utf-8")
    cases.append((status, "close" if close else "open", slug, data))

CRLF = "\r\n"
def req(line="GET /health HTTP/1.1", headers=("Host: t",), body=""):
    return line + CRLF + "".join(h + CRLF for h in headers) + CRLF + body

EVENT = '{"userId":"u","value":1}'
CHUNKED_EVENT = "18\r\n" + EVENT + "\r\n0\r\n\r\n"

# --- Request smuggling: Content-Length and Transfer-Encoding together -------------
for i, hs in enumerate([
    ("Content-Length: 24", "Transfer-Encoding: chunked"),
    ("Transfer-Encoding: chunked", "Content-Length: 24"),
    ("Content-Length: 0", "Transfer-Encoding: chunked"),
    ("Transfer-Encoding: chunked", "Content-Length: 3"),
    ("Content-Length: 24", "Transfer-Encoding: identity"),
]):
    case(400, True, f"cl-te-{i}", req("POST /event HTTP/1.1", ("Host: t", "Content-Type: application/json") + hs, CHUNKED_EVENT))

# --- Transfer-Encoding obfuscations (TE.TE) ---------------------------------------
te_400 = [
    "chunked, chunked", "chunked, identity", "xchunked", "chunked;q=1", "chunk", "chunked\x0b",
    "\"chunked\"", "chunked,", ",chunked", "chunked, ,", "identity",
]
for i, te in enumerate(te_400):
    case(400, True, f"te-obfuscated-{i}", req("POST /event HTTP/1.1", ("Host: t", "Content-Type: application/json", "Transfer-Encoding: " + te), CHUNKED_EVENT))
for i, te in enumerate(["gzip, chunked", "deflate, chunked", "identity, chunked", "br, chunked"]):
    case(501, True, f"te-other-coding-{i}", req("POST /event HTTP/1.1", ("Host: t", "Content-Type: application/json", "Transfer-Encoding: " + te), CHUNKED_EVENT))
for i, hs in enumerate([
    ("Transfer-Encoding: chunked", "Transfer-Encoding: chunked"),
    ("Transfer-Encoding: chunked", "Transfer-Encoding: identity"),
    ("Transfer-Encoding: gzip", "Transfer-Encoding: chunked, chunked"),
]):
    case(400, True, f"te-twice-{i}", req("POST /event HTTP/1.1", ("Host: t", "Content-Type: application/json") + hs, CHUNKED_EVENT))
for i, name in enumerate(["Transfer-Encoding :", "Transfer_Encoding:", "Transfer-Encoding\x00:", " Transfer-Encoding:"]):
    case(400, True, f"te-bad-name-{i}", "POST /event HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n" + name + " chunked\r\n\r\n" + CHUNKED_EVENT)
# Accepted: the coding is case-insensitive and optional whitespace is trimmed (RFC 9110).
for i, te in enumerate(["CHUNKED", "Chunked", " chunked ", "\tchunked"]):
    case(200, False, f"te-accepted-{i}", req("POST /event HTTP/1.1", ("Host: t", "Content-Type: application/json", "Transfer-Encoding:" + te), CHUNKED_EVENT))
case(400, True, "te-in-http10", req("POST /event HTTP/1.0", ("Host: t", "Content-Type: application/json", "Transfer-Encoding: chunked"), CHUNKED_EVENT))

# --- Content-Length variants --------------------------------------------------------
for i, cl in enumerate(["24, 24", "24,24", "+24", "-24", "24 24", "0x18", "24.0", "2 4", "", "99999999999999999999", "1e2", "24;", "٢٤"]):
    case(400, True, f"cl-invalid-{i}", req("POST /event HTTP/1.1", ("Host: t", "Content-Type: application/json", "Content-Length: " + cl), EVENT))
for i, hs in enumerate([
    ("Content-Length: 24", "Content-Length: 24"),
    ("Content-Length: 24", "Content-Length: 25"),
    ("Content-Length: 24", "content-length: 24"),
]):
    case(400, True, f"cl-twice-{i}", req("POST /event HTTP/1.1", ("Host: t", "Content-Type: application/json") + hs, EVENT))
# Accepted: 1*DIGIT allows leading zeros; optional whitespace is trimmed.
for i, cl in enumerate(["024", "0000000024", " 24", "24 ", "\t24"]):
    case(200, False, f"cl-accepted-{i}", "POST /event HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length:" + (cl if cl[0] in " \t" else " " + cl) + "\r\n\r\n" + EVENT)
case(413, True, "cl-over-json-limit", req("POST /event HTTP/1.1", ("Host: t", "Content-Type: application/json", "Content-Length: 10000000"), EVENT))
# An upload is refused from its head, before its length or body matter: here for
# its unknown key (an upload's refusal always closes: its body is never skipped).
case(401, True, "upload-without-length-or-valid-key", req("POST /api/file HTTP/1.1", ("Host: t", "Content-Type: image/png", "Authorization: Bearer " + "0" * 64)))

# --- Chunk sizes, extensions and line ends -------------------------------------------
def chunked_event(body_wire):
    return req("POST /event HTTP/1.1", ("Host: t", "Content-Type: application/json", "Transfer-Encoding: chunked"), body_wire)
chunk_400 = {
    "size-overflow-17-digits": "FFFFFFFFFFFFFFFFF\r\n" + EVENT + "\r\n0\r\n\r\n",
    "size-negative": "-18\r\n" + EVENT + "\r\n0\r\n\r\n",
    "size-plus": "+18\r\n" + EVENT + "\r\n0\r\n\r\n",
    "size-0x": "0x18\r\n" + EVENT + "\r\n0\r\n\r\n",
    "size-empty": "\r\n" + EVENT + "\r\n0\r\n\r\n",
    "size-space-inside": "1 8\r\n" + EVENT + "\r\n0\r\n\r\n",
    "size-not-hex": "1g\r\n" + EVENT + "\r\n0\r\n\r\n",
    "data-longer-than-size": "10\r\n" + EVENT + "\r\n0\r\n\r\n",
    "data-without-crlf": "18\r\n" + EVENT + "0\r\n\r\n",
    "data-with-lf-only-then-garbage": "18\r\n" + EVENT + "X\n0\r\n\r\n",
    "data-with-bare-cr": "18\r\n" + EVENT + "\r0\r\n\r\n",
    "extension-with-lf": "18;a\nb\r\n" + EVENT + "\r\n0\r\n\r\n",
    "extension-with-bare-cr": "18;a\rb\r\n" + EVENT + "\r\n0\r\n\r\n",
    "extension-with-nul": "18;a\x00b\r\n" + EVENT + "\r\n0\r\n\r\n",
    "size-line-bare-cr": "18\r" + EVENT + "\r\n0\r\n\r\n",
    "last-chunk-bare-cr": "18\r\n" + EVENT + "\r\n0\r\r\n",
    "trailer-without-colon": "18\r\n" + EVENT + "\r\n0\r\nNoColon\r\n\r\n",
    "trailer-bare-cr": "18\r\n" + EVENT + "\r\n0\r\nX: a\rb\r\n\r\n",
    "trailer-space-in-name": "18\r\n" + EVENT + "\r\n0\r\nX Y: 1\r\n\r\n",
    "trailer-folded": "18\r\n" + EVENT + "\r\n0\r\nX: 1\r\n 2\r\n\r\n",
    "trailer-control-in-value": "18\r\n" + EVENT + "\r\n0\r\nX: a\x01b\r\n\r\n",
    # Chunk lines end in CRLF only: a lone LF there is a known smuggling vector.
    "lf-line-ends": "18\n" + EVENT + "\n0\n\n",
    "lf-after-size-only": "18\n" + EVENT + "\r\n0\r\n\r\n",
}
for slug, wire in chunk_400.items():
    case(400, True, "chunk-" + slug, chunked_event(wire))
case(413, True, "chunk-size-over-limit", chunked_event("FFFFFFFFFFFF\r\n" + EVENT + "\r\n0\r\n\r\n"))
chunk_ok = {
    "extension": "18;name=value\r\n" + EVENT + "\r\n0\r\n\r\n",
    "extensions-quoted": "18;a=\"b c\";d\r\n" + EVENT + "\r\n0;x=1\r\n\r\n",
    "split-in-two": "c\r\n" + EVENT[:12] + "\r\nc\r\n" + EVENT[12:] + "\r\n0\r\n\r\n",
    "leading-zeros": "00018\r\n" + EVENT + "\r\n0\r\n\r\n",
    "uppercase-hex": "18\r\n" + EVENT + "\r\n0\r\n\r\n",
    "trailer": "18\r\n" + EVENT + "\r\n0\r\nX-Check: 1\r\n\r\n",
    "trailers-two": "18\r\n" + EVENT + "\r\n0\r\nX-A: 1\r\nX-B:\r\n\r\n",
}
for slug, wire in chunk_ok.items():
    case(200, False, "chunk-ok-" + slug, chunked_event(wire))

# --- obs-fold, bare CR, bare LF, whitespace in the head ---------------------------------
case(400, True, "obs-fold", "GET /health HTTP/1.1\r\nHost: t\r\nX-Long: a\r\n b\r\n\r\n")
case(400, True, "obs-fold-tab", "GET /health HTTP/1.1\r\nHost: t\r\nX-Long: a\r\n\tb\r\n\r\n")
case(400, True, "obs-fold-first-field", "GET /health HTTP/1.1\r\n Host: t\r\n\r\n")
case(400, True, "bare-cr-request-line", "GET /health HTTP/1.1\rHost: t\r\n\r\n")
case(400, True, "bare-cr-in-value", "GET /health HTTP/1.1\r\nHost: t\r\nX: a\rb\r\n\r\n")
case(400, True, "bare-cr-in-name", "GET /health HTTP/1.1\r\nHost: t\r\nX\rY: a\r\n\r\n")
case(400, True, "bare-cr-before-end", "GET /health HTTP/1.1\r\nHost: t\r\n\r\r\n")
case(400, True, "space-before-colon", "GET /health HTTP/1.1\r\nHost : t\r\n\r\n")
case(400, True, "no-colon", "GET /health HTTP/1.1\r\nHost t\r\n\r\n")
case(400, True, "empty-name", "GET /health HTTP/1.1\r\n: t\r\n\r\n")
case(400, True, "space-in-name", "GET /health HTTP/1.1\r\nX Y: t\r\n\r\n")
case(400, True, "two-hosts", "GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
case(400, True, "two-spaces-in-line", "GET  /health HTTP/1.1\r\nHost: t\r\n\r\n")
case(400, True, "tab-in-line", "GET\t/health HTTP/1.1\r\nHost: t\r\n\r\n")
case(400, True, "no-version", "GET /health\r\nHost: t\r\n\r\n")
case(400, True, "trailing-space-in-line", "GET /health HTTP/1.1 \r\nHost: t\r\n\r\n")
# Allowed by RFC 9112 2.2 (the C clients rely on it): LF alone ends a line, empty lines before the request line.
case(200, False, "lf-line-ends", "GET /health HTTP/1.1\nHost: t\n\n")
case(200, False, "empty-lines-first", "\r\n\r\nGET /health HTTP/1.1\r\nHost: t\r\n\r\n")
case(200, False, "no-host", "GET /health HTTP/1.1\r\n\r\n")
case(200, False, "tab-in-value", "GET /health HTTP/1.1\r\nHost: t\r\nX: a\tb\r\n\r\n")
case(200, False, "obs-text-in-value", "GET /health HTTP/1.1\r\nHost: t\r\nX: caf\xe9\r\n\r\n")

# --- NUL and control bytes in every part of the head -------------------------------------
controls = {"nul": "\x00", "soh": "\x01", "bs": "\x08", "vt": "\x0b", "ff": "\x0c", "esc": "\x1b", "del": "\x7f"}
for name, c in controls.items():
    case(400, True, f"control-{name}-in-method", f"GE{c}T /health HTTP/1.1\r\nHost: t\r\n\r\n")
    case(400, True, f"control-{name}-in-target", f"GET /hea{c}lth HTTP/1.1\r\nHost: t\r\n\r\n")
    case(400, True, f"control-{name}-in-version", f"GET /health HTTP/1{c}.1\r\nHost: t\r\n\r\n")
    case(400, True, f"control-{name}-in-name", f"GET /health HTTP/1.1\r\nHo{c}st: t\r\n\r\n")
    case(400, True, f"control-{name}-in-value", f"GET /health HTTP/1.1\r\nHost: t{c}t\r\n\r\n")

# --- Sizes ---------------------------------------------------------------------------------
case(431, True, "long-request-line", "GET /" + "a" * 9000 + " HTTP/1.1\r\nHost: t\r\n\r\n")
case(431, True, "long-header-name", "GET /health HTTP/1.1\r\nHost: t\r\nX-" + "n" * 9000 + ": v\r\n\r\n")
case(431, True, "long-header-value", "GET /health HTTP/1.1\r\nHost: t\r\nX-Big: " + "v" * 9000 + "\r\n\r\n")
case(431, True, "too-many-headers", "GET /health HTTP/1.1\r\n" + "".join(f"X-{i}: v\r\n" for i in range(70)) + "\r\n")
case(431, True, "many-empty-lines-first", "\r\n" * 5000 + "GET /health HTTP/1.1\r\nHost: t\r\n\r\n")

# --- Methods and versions --------------------------------------------------------------------
for i, m in enumerate(["G@T", "GET/", "[GET]", "GE T", "\"GET\""]):
    case(400, True, f"method-invalid-{i}", f"{m} /health HTTP/1.1\r\nHost: t\r\n\r\n")
case(400, True, "method-empty", " /health HTTP/1.1\r\nHost: t\r\n\r\n")
for i, m in enumerate(["get", "FOO", "PATCH", "DELETE", "BREW", "CONNECT"]):
    case(405, False, f"method-not-allowed-{i}", f"{m} /health HTTP/1.1\r\nHost: t\r\n\r\n")
for i, v in enumerate(["HTTP/1.2", "HTTP/2.0", "HTTP/0.9", "HTTP/1.1x", "http/1.1", "HTTP/1", "HTTP/11", "HTTP/1.10", "HTTPS/1.1"]):
    case(400, True, f"version-{i}", f"GET /health {v}\r\nHost: t\r\n\r\n")
case(200, True, "version-1.0-closes", "GET /health HTTP/1.0\r\nHost: t\r\n\r\n")
case(200, False, "version-1.0-keep-alive", "GET /health HTTP/1.0\r\nHost: t\r\nConnection: keep-alive\r\n\r\n")
case(200, True, "connection-close", "GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")

# --- Request targets ---------------------------------------------------------------------------
case(400, True, "absolute-form", "GET http://t/health HTTP/1.1\r\nHost: t\r\n\r\n")
case(400, True, "absolute-form-https", "GET https://t:443/health HTTP/1.1\r\nHost: t\r\n\r\n")
case(400, True, "asterisk-form", "OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n")
case(400, True, "authority-form", "CONNECT t:443 HTTP/1.1\r\nHost: t\r\n\r\n")
case(400, True, "empty-target", "GET  HTTP/1.1\r\nHost: t\r\n\r\n")
case(400, True, "relative-target", "GET health HTTP/1.1\r\nHost: t\r\n\r\n")
case(404, False, "dot-segments", "GET /../health HTTP/1.1\r\nHost: t\r\n\r\n")
case(404, False, "percent-encoded", "GET /%68ealth HTTP/1.1\r\nHost: t\r\n\r\n")
case(404, False, "double-slash", "GET //health HTTP/1.1\r\nHost: t\r\n\r\n")
case(400, False, "sample-id-not-a-number", "GET /api/sample/1x HTTP/1.1\r\nHost: t\r\n\r\n")
case(400, False, "sample-id-overflow", "GET /api/sample/99999999999999999999 HTTP/1.1\r\nHost: t\r\n\r\n")
case(200, False, "query-on-health", "GET /health?x=1&y HTTP/1.1\r\nHost: t\r\n\r\n")

# --- Expect ----------------------------------------------------------------------------------------
case(200, False, "expect-100-continue-no-body", "GET /health HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n\r\n")
case(200, False, "expect-100-continue-mixed-case", "GET /health HTTP/1.1\r\nHost: t\r\nExpect: 100-Continue\r\n\r\n")
case(417, True, "expect-other", "GET /health HTTP/1.1\r\nHost: t\r\nExpect: 200-ok\r\n\r\n")
case(417, True, "expect-list", "GET /health HTTP/1.1\r\nHost: t\r\nExpect: 100-continue, x\r\n\r\n")
case(417, True, "expect-empty", "GET /health HTTP/1.1\r\nHost: t\r\nExpect:\r\n\r\n")
case(200, True, "expect-ignored-in-http10", "GET /health HTTP/1.0\r\nHost: t\r\nExpect: 100-continue\r\n\r\n")

# --- Pipelined garbage after a valid request ----------------------------------------------------------
for i, garbage in enumerate(["GARBAGE\r\n\r\n", "\x00\x01\x02\r\n\r\n", "GET\r\n\r\n", "GET / HTTP/9.9\r\n\r\n", "HTTP/1.1 200 OK\r\n\r\n", " \r\n\r\n"]):
    case(200, True, f"pipelined-garbage-{i}", req() + garbage)
# Bodies: JSON that is not what the route takes, and a body on a route without one.
case(400, False, "event-not-json", req("POST /event HTTP/1.1", ("Host: t", "Content-Type: application/json", "Content-Length: 5"), "hello"))
case(400, False, "event-unknown-field", req("POST /event HTTP/1.1", ("Host: t", "Content-Type: application/json", "Content-Length: 30"), '{"userId":"u","value":1,"x":1}'))
case(415, False, "event-wrong-media-type", req("POST /event HTTP/1.1", ("Host: t", "Content-Type: text/plain", "Content-Length: 24"), EVENT))
case(200, False, "health-with-small-body", req("GET /health HTTP/1.1", ("Host: t", "Content-Length: 5"), "hello"))

# --- Write the files ----------------------------------------------------------------------------------
for f in os.listdir(HERE):
    if f.endswith(".http"):
        os.remove(os.path.join(HERE, f))
seen = set()
for status, close, slug, data in cases:
    slug = re.sub(r"[^a-z0-9.-]", "-", slug.lower())
    name = f"{status}-{close}-{slug}.http"
    assert name not in seen, name
    seen.add(name)
    with open(os.path.join(HERE, name), "wb") as out:
        out.write(data)
print(f"{len(cases)} cases written to {HERE}")
