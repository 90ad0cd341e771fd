#!/usr/bin/python3
"""Mock of the Billogram API v2 credit-payment command, for the test suite.

HTTPS API port (HTTP Basic auth) plus a plain-HTTP control port, both on
127.0.0.1.  Standard library only.  See README.md beside this file for the
magic invoice ids and the control endpoints.
"""

import argparse
import base64
import binascii
import datetime
import hashlib
import hmac
import json
import os
import random
import re
import signal
import socket
import ssl
import sys
import tempfile
import threading
import time
import uuid
from decimal import Decimal, InvalidOperation
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from urllib.parse import parse_qs, urlsplit

HERE = os.path.dirname(os.path.abspath(__file__))
TEMPLATE_FILE = os.path.join(HERE, "example-response.json")

HANDSHAKE_TIMEOUT = 10.0   # seconds for the TLS handshake of one connection
IDLE_TIMEOUT = 120.0       # seconds a keep-alive connection may sit idle
MAX_BODY = 16 * 1024 * 1024
SILENT_SECONDS = 60.0

CENT = Decimal("0.01")
START_TOTAL = Decimal("-1000.00")

ID_RE = re.compile(r"[A-Za-z0-9]+\Z")
ANY_ID_RE = re.compile(r"/api/v2/billogram/([^/]+)")
PAY_RE = re.compile(r"/api/v2/billogram/([^/]+)/command/credit-payment/?\Z")
GET_RE = re.compile(r"/api/v2/billogram/([^/]+)/?\Z")
CTL_PAY_RE = re.compile(r"/invoice/([^/]+)/pay\Z")
AMOUNT_RE = re.compile(r"[0-9]+(\.[0-9]+)?\Z")
TIMESTAMP_RE = re.compile(r"[\x21-\x7e]+\Z")
# The first alternative that matches the id's start wins, so a prefix must
# come before any shorter prefix it starts with.  No prefix here starts with
# another one today ("adrop" and "ndrop" do not start with "drop", "n500"
# not with "nf" or "nul"); keep it so when adding one.
MAGIC_RE = re.compile(
    r"(nf|e400|e401|e403|e409|e429|e500|e502|e503|e504|slow(?P<ms>[0-9]+)|"
    r"a500|a502|adrop|ndrop|n500|"
    r"drop|cut|trunc|notjson|empty|wrongtype|nodata|nostatus|okerr|created|longsv|"
    r"huge(?P<mib>[0-9]+)|bigok|bighdr|deep|nul|badutf|silent|trickle|redirect|"
    r"latnul|latx)")

# Magic ids whose reply is fixed and that never touch the invoice.
FIXED_FAULTS = {"nf", "e400", "e401", "e403", "e409", "e429", "e500", "n500",
                "e502", "e503", "okerr", "redirect", "longsv"}

# A 600-byte Swedish message: byte 511 falls inside a two-byte character,
# where a client that cuts by bytes splits it.
LONG_SWEDISH = "Felaktigt belopp: " + "\u00e5\u00e4\u00f6" * 100
# Magic ids whose payment is applied and whose delivery is then broken,
# whatever the reply (success or error) would have been.
# The value is how deliver() breaks the reply; "adrop" is "drop" under a
# name that says "applied" beside "ndrop".
TRANSPORT_FAULTS = {"drop": "drop", "adrop": "drop", "cut": "cut",
                    "trickle": "trickle"}
# Magic ids that only apply to GET /billogram/{id} when --magic-get is given.
GET_ALWAYS = {"nf", "slow"}

FILL = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/" * 1024

STOP = threading.Event()


# --------------------------------------------------------------------------
# JSON output: money is Decimal and is written with exactly two decimals.

def money(d):
    d = d.quantize(CENT)
    if d == 0:
        d = Decimal("0.00")        # never "-0.00"
    return format(d, "f")


def _enc(o, out):
    if isinstance(o, str):
        out.append(json.dumps(o))
    elif isinstance(o, dict):
        out.append("{")
        first = True
        for k, v in o.items():
            if not first:
                out.append(",")
            first = False
            out.append(json.dumps(str(k)))
            out.append(":")
            _enc(v, out)
        out.append("}")
    elif isinstance(o, (list, tuple)):
        out.append("[")
        first = True
        for v in o:
            if not first:
                out.append(",")
            first = False
            _enc(v, out)
        out.append("]")
    elif o is None:
        out.append("null")
    elif o is True:
        out.append("true")
    elif o is False:
        out.append("false")
    elif isinstance(o, Decimal):
        out.append(money(o))
    elif isinstance(o, int):
        out.append(str(o))
    elif isinstance(o, float):
        out.append(json.dumps(o))
    else:
        raise TypeError("cannot encode %r" % type(o))


def to_json(o):
    out = []
    _enc(o, out)
    return "".join(out).encode("utf-8")


def ctl_json(o):
    return json.dumps(o, separators=(",", ":")).encode("utf-8")


def ctl_event(e):
    """An event for the control port: its amount as a string, like money there."""
    e = dict(e)
    e["data"] = {k: money(v) if isinstance(v, Decimal) else v
                 for k, v in e["data"].items()}
    return e


# The mock's clock, as its events' created_at show it: POST /clock sets an
# offset from the real time (Billogram's clock may be ahead or behind ours)
# and whether the times carry their zone; POST /reset puts it back.
CLOCK = {"offset_s": 0.0, "naive": False}


def check_clock(c):
    if (not isinstance(c, dict) or not set(c) <= {"offset_s", "naive"}
            or not isinstance(c.get("offset_s", 0), (int, float))
            or isinstance(c.get("offset_s", 0), bool)
            or not isinstance(c.get("naive", False), bool)):
        raise ValueError('expected {"offset_s": seconds[, "naive": bool]}')
    return {"offset_s": float(c.get("offset_s", 0)),
            "naive": c.get("naive", False)}


def now_iso():
    t = (datetime.datetime.now(datetime.timezone.utc)
         + datetime.timedelta(seconds=CLOCK["offset_s"]))
    zone = "" if CLOCK["naive"] else "Z"
    return (t.strftime("%Y-%m-%dT%H:%M:%S.")
            + "%03d" % (t.microsecond // 1000) + zone)


# --------------------------------------------------------------------------
# Replies

class Fill:
    """n filler bytes of base64 alphabet, produced in chunks when sent."""

    def __init__(self, n):
        self.n = n


class Resp:
    def __init__(self, status, body=b"", ctype="application/json",
                 headers=(), parts=None):
        self.status = status
        self.ctype = ctype
        self.headers = list(headers)
        self.parts = [body] if parts is None else list(parts)
        self.length = sum(p.n if isinstance(p, Fill) else len(p)
                          for p in self.parts)

    def chunks(self, limit=None):
        left = self.length if limit is None else limit
        for p in self.parts:
            if left <= 0:
                return
            if isinstance(p, Fill):
                n = min(p.n, left)
                while n > 0:
                    k = min(n, len(FILL))
                    yield FILL[:k] if k < len(FILL) else FILL
                    n -= k
                    left -= k
            else:
                piece = p[:left]
                if piece:
                    yield piece
                left -= len(piece)

    def single(self):
        if len(self.parts) == 1 and isinstance(self.parts[0], bytes):
            return self.parts[0]
        return None


def err(http, status, message, field=False, headers=()):
    data = {"message": message}
    if field is not False:
        data["field"] = field
        data["field_path"] = None if field is None else [field]
    return Resp(http, to_json({"status": status, "data": data}),
                headers=headers)


def html(http, retry_after=None):
    try:
        reason = HTTPStatus(http).phrase
    except ValueError:
        reason = "Error"
    body = ("<html><body><h1>%d %s</h1></body></html>" % (http, reason)).encode()
    headers = []
    if retry_after is not None:
        headers.append(("Retry-After", str(retry_after)))
    return Resp(http, body, "text/html", headers)


def fixed_fault(name):
    if name == "nf":
        return err(404, "NOT_FOUND", "Billogram not found")
    if name == "e400":
        return err(400, "INVALID_PARAMETER", "Invalid amount", field="amount")
    if name == "e401":
        return err(401, "MISSING_AUTH", "Authentication required")
    if name == "e403":
        return err(403, "PERMISSION_DENIED", "Permission denied")
    if name == "e409":
        return err(409, "SOME_NEW_STATUS", "Conflict for test")
    if name == "e429":
        return err(429, "TOO_MANY_REQUESTS", "Too many requests",
                   headers=[("Retry-After", "1")])
    if name in ("e500", "n500"):
        return html(500)
    if name == "e502":
        return Resp(502, b"", None)
    if name == "e503":
        return html(503, 2)
    if name == "redirect":
        # 307 keeps the method and body: a client following it would pay
        # invoice "redirtarget" instead
        return Resp(307, b"", None, headers=[
            ("Location", "/api/v2/billogram/redirtarget/command/credit-payment")])
    if name == "longsv":
        return err(400, "INVALID_PARAMETER", LONG_SWEDISH, field="amount")
    if name == "okerr":
        return Resp(200, b'{"status":"INVALID_PARAMETER","data":'
                         b'{"message":"error inside a 200"}}')
    raise AssertionError(name)


# --------------------------------------------------------------------------
# Shared state

class State:
    def __init__(self):
        self.lock = threading.Lock()
        self.template = None
        self._clear()

    def _clear(self):
        self.requests = []
        self.seq = 0
        self.invoices = {}
        self.fault = {"mode": "none"}
        self.rng = None

    def reset(self):
        with self.lock:
            self._clear()

    def is_down(self):
        return self.fault.get("mode") == "down"

    def record(self, method, path, bid, headers, body):
        with self.lock:
            self.seq += 1
            entry = {"seq": self.seq, "time": time.time(), "method": method,
                     "path": path, "id": bid, "headers": headers,
                     "body": body.decode("latin-1"), "fault": None}
            self.requests.append(entry)
            return entry

    def set_fault(self, f):
        with self.lock:
            # a time-limited fault ends at a moment of the mock's clock,
            # which GET /fault and the request log both use
            if f.get("for_s") is not None:
                f["until"] = time.time() + f["for_s"]
            self.fault = f
            self.rng = (random.Random(f.get("seed"))
                        if f["mode"] == "random" else None)
        # A server that goes down closes its open connections too: clients
        # then see the close before reusing one, as with a real outage.
        if f.get("mode") == "down" and API_SERVER is not None:
            API_SERVER.drop_open_connections()

    def take_global_fault(self):
        """Decide what the global fault does to one request."""
        with self.lock:
            f = self.fault
            mode = f.get("mode")
            if mode == "status":
                if "until" in f and time.time() >= f["until"]:
                    self.fault = {"mode": "none"}
                    return None
                if "count" in f:
                    if f["count"] <= 0:
                        self.fault = {"mode": "none"}
                        return None
                    f["count"] -= 1
                    if f["count"] <= 0:
                        self.fault = {"mode": "none"}
                return ("status", f["status"], f.get("retry_after"))
            if mode == "slow":
                return ("slow", f["ms"])
            if mode == "random":
                if self.rng.random() < f["rate"]:
                    return ("random", self.rng.choice(
                        ["500", "drop", "cut", "slow"]))
            return None

    # invoices (call with the lock held)
    def _invoice(self, bid):
        inv = self.invoices.get(bid)
        if inv is None:
            inv = {"id": bid, "total_sum": START_TOTAL,
                   "remaining_sum": START_TOTAL, "state": "Unpaid",
                   "events": [], "payments": []}
            self.invoices[bid] = inv
        return inv

    @staticmethod
    def _snap(inv):
        return {"id": inv["id"], "total_sum": inv["total_sum"],
                "remaining_sum": inv["remaining_sum"], "state": inv["state"],
                "events": list(inv["events"])}

    def get(self, bid):
        with self.lock:
            return self._snap(self._invoice(bid))

    def pay(self, bid, mode, amount, seq):
        """Returns (snapshot, None) or (None, error Resp)."""
        with self.lock:
            inv = self._invoice(bid)
            refused = self._apply(inv, mode, amount, seq)
            if refused is not None:
                return None, err(400, *refused)
            return self._snap(inv), None

    def pay_outside(self, bid, mode, amount):
        """A payment made without the API (seq null, nothing recorded).
        Returns (control view, None) or (None, message)."""
        with self.lock:
            inv = self._invoice(bid)
            refused = self._apply(inv, mode, amount, None)
            if refused is not None:
                return None, refused[1]
            return self._view(inv), None

    def _apply(self, inv, mode, amount, seq):
        """Pays; or returns (status, message, field) of the refusal."""
        rem = inv["remaining_sum"]
        if mode == "remaining":
            if rem == 0:
                return ("INVALID_OBJECT_STATE",
                        "The billogram has no remaining sum", None)
            amount = -rem
        else:
            if amount > -rem:
                return ("INVALID_PARAMETER",
                        "amount exceeds the remaining sum", "amount")
            if amount != amount.quantize(CENT):
                return ("INVALID_PARAMETER",
                        "amount must not have more than two decimals",
                        "amount")
            amount = amount.quantize(CENT)
        new = rem + amount
        if new == 0:
            new = Decimal("0.00")
        inv["remaining_sum"] = new
        inv["state"] = "Paid" if new == 0 else "PartlyPaid"
        self._add_payment(inv, amount, seq)
        return None

    @staticmethod
    def _add_payment(inv, amount, seq):
        # The event has the members Billogram's events have.  event_uuid and
        # billogram_id come first so that type, created_at and data stay
        # together as before (JSON member order means nothing to a client).
        created = now_iso()
        inv["events"].append({"event_uuid": str(uuid.uuid4()),
                              "billogram_id": inv["id"], "type": "Payment",
                              "created_at": created,
                              "data": {"amount": amount}})
        inv["payments"].append({"amount": money(amount),
                                "created_at": created, "seq": seq})

    def event_of(self, bid, index):
        """(snapshot, event) for an event of an invoice, or None if there
        is no such invoice or event.  A negative index counts from the end."""
        with self.lock:
            inv = self.invoices.get(bid)
            if inv is None:
                return None
            n = len(inv["events"])
            i = index + n if index < 0 else index
            if not 0 <= i < n:
                return None
            return self._snap(inv), inv["events"][i]

    def invoice_view(self, bid):
        with self.lock:
            inv = self.invoices.get(bid)
            return None if inv is None else self._view(inv)

    @staticmethod
    def _view(inv):
        return {"id": inv["id"], "total_sum": money(inv["total_sum"]),
                "remaining_sum": money(inv["remaining_sum"]),
                "state": inv["state"], "payments": list(inv["payments"]),
                "events": [ctl_event(e) for e in inv["events"]]}

    def data(self, snap, attachment=None):
        d = dict(self.template)
        d["id"] = snap["id"]
        d["state"] = snap["state"]
        d["events"] = snap["events"]
        d["remaining_sum"] = snap["remaining_sum"]
        d["total_sum"] = snap["total_sum"]
        if attachment is not None:
            d["attachment_content"] = attachment
        return d


STATE = State()


class Log:
    def __init__(self, path):
        self.lock = threading.Lock()
        self.f = open(path, "a", buffering=1) if path else None

    def __call__(self, msg):
        if self.f is None:
            return
        line = "%s %s\n" % (time.strftime("%Y-%m-%d %H:%M:%S"), msg)
        with self.lock:
            try:
                self.f.write(line)
            except (OSError, ValueError):
                pass


LOG = Log(None)


class BodyError(Exception):
    pass


# --------------------------------------------------------------------------
# Common handler bits

class BaseHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "billogram-mock/1.0"
    sys_version = ""
    timeout = IDLE_TIMEOUT
    tag = "?"

    def log_message(self, fmt, *args):
        LOG("%s %s:%s %s" % (self.tag, self.client_address[0],
                             self.client_address[1], fmt % args))

    def read_body(self):
        te = self.headers.get("Transfer-Encoding")
        if te is not None:
            if te.strip().lower() != "chunked":
                raise BodyError("unsupported Transfer-Encoding")
            return self._read_chunked()
        cl = self.headers.get("Content-Length")
        if cl is None:
            return b""
        try:
            n = int(cl.strip())
        except ValueError:
            raise BodyError("bad Content-Length")
        if n < 0 or n > MAX_BODY:
            raise BodyError("bad Content-Length")
        data = self.rfile.read(n)
        if len(data) != n:
            raise ConnectionError("client closed mid-body")
        return data

    def _read_chunked(self):
        out = bytearray()
        while True:
            line = self.rfile.readline(1024)
            if not line.endswith(b"\n"):
                raise ConnectionError("client closed mid-body")
            try:
                n = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise BodyError("bad chunk size")
            if n == 0:
                break
            if len(out) + n > MAX_BODY:
                raise BodyError("body too large")
            chunk = self.rfile.read(n + 2)
            if len(chunk) != n + 2:
                raise ConnectionError("client closed mid-body")
            out += chunk[:n]
        while True:     # trailers
            line = self.rfile.readline(65537)
            if not line.endswith(b"\n"):
                raise ConnectionError("client closed mid-body")
            if line in (b"\r\n", b"\n"):
                return bytes(out)

    def head_bytes(self, resp, closing):
        try:
            reason = HTTPStatus(resp.status).phrase
        except ValueError:
            reason = "Unknown"
        lines = ["HTTP/1.1 %d %s" % (resp.status, reason),
                 "Date: " + self.date_time_string(),
                 "Server: " + self.server_version]
        if resp.ctype:
            lines.append("Content-Type: " + resp.ctype)
        lines.append("Content-Length: %d" % resp.length)
        for k, v in resp.headers:
            lines.append("%s: %s" % (k, v))
        if closing:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def deliver(self, resp, how="normal"):
        """Send resp: how is normal, drop, cut, trickle or silent."""
        if how == "silent":
            self.close_connection = True
            STOP.wait(SILENT_SECONDS)
            return
        if how == "drop" or resp is None:
            self.close_connection = True
            return
        send_body = getattr(self, "command", None) != "HEAD"
        self.log_request(resp.status, resp.length)
        w = self.wfile
        if how == "cut":
            self.close_connection = True
            w.write(self.head_bytes(resp, False))
            for c in resp.chunks(resp.length // 2):
                w.write(c)
            return
        head = self.head_bytes(resp, self.close_connection)
        if how == "trickle":
            w.write(head)
            if send_body:
                for c in resp.chunks():
                    for i in range(len(c)):
                        w.write(c[i:i + 1])
                        if STOP.wait(1.0):
                            self.close_connection = True
                            return
            return
        body = resp.single()
        if not send_body:
            w.write(head)
        elif body is not None and len(body) <= 65536:
            w.write(head + body)
        else:
            w.write(head)
            for c in resp.chunks():
                w.write(c)

    def send_error(self, code, message=None, explain=None):
        # Used by http.server for unparsable requests: answer in the
        # Billogram envelope and close.
        self.close_connection = True
        status = {400: "INVALID_REQUEST", 404: "NOT_FOUND",
                  405: "METHOD_NOT_ALLOWED"}.get(code, "ERROR")
        try:
            self.deliver(err(code, status, message or "error %d" % code))
        except OSError:
            pass


# --------------------------------------------------------------------------
# API port

class ApiHandler(BaseHandler):
    tag = "api"

    def __getattr__(self, name):
        # Every method (GET, POST, PUT, FOO...) goes through dispatch().
        if name.startswith("do_"):
            return self.dispatch
        raise AttributeError(name)

    def dispatch(self):
        if STATE.is_down():
            self.close_connection = True
            return
        raw_path = self.path
        path = urlsplit(raw_path).path
        m = ANY_ID_RE.match(path)
        bid = m.group(1) if m and ID_RE.match(m.group(1)) else None
        try:
            body = self.read_body()
        except BodyError as e:
            self.close_connection = True
            self.deliver(err(400, "INVALID_PARAMETER", str(e)))
            return
        headers = {}
        for k, v in self.headers.items():
            k = k.lower()
            headers[k] = headers[k] + ", " + v if k in headers else v
        entry = STATE.record(self.command, raw_path, bid, headers, body)

        how = "normal"
        gf = STATE.take_global_fault()
        if gf is not None:
            entry["fault"] = "global-" + "-".join(str(x) for x in gf[:2])
            if gf[0] == "status":
                self.deliver(html(gf[1], gf[2]))
                return
            if gf[0] == "slow":
                STOP.wait(gf[1] / 1000.0)
            elif gf[1] == "500":
                self.deliver(html(500))
                return
            elif gf[1] == "drop":
                self.deliver(None, "drop")
                return
            elif gf[1] == "slow":
                STOP.wait(3.0)
            elif gf[1] == "cut":
                how = "cut"
        resp, how2 = self.api(path, body, entry)
        if how2 != "normal":
            how = how2
        self.deliver(resp, how)

    def check_auth(self):
        auth = self.headers.get("Authorization")
        if auth is None:
            return err(401, "MISSING_AUTH", "Authentication required")
        scheme, _, cred = auth.strip().partition(" ")
        ok = False
        if scheme.lower() == "basic":
            try:
                raw = base64.b64decode(cred.strip(), validate=True)
                user, sep, pw = raw.decode("utf-8").partition(":")
                ok = (sep == ":" and user == self.server.api_user
                      and pw == self.server.api_password)
            except (binascii.Error, UnicodeDecodeError, ValueError):
                ok = False
        if not ok:
            return err(403, "INVALID_AUTH", "Invalid API credentials")
        return None

    def api(self, path, body, entry):
        """Returns (Resp, how)."""
        e = self.check_auth()
        if e is not None:
            return e, "normal"
        method = self.command
        m = PAY_RE.match(path)
        if m:
            kind, allowed = "pay", ("POST",)
        else:
            m = GET_RE.match(path)
            kind, allowed = "get", ("GET", "HEAD")
        if m is None or not ID_RE.match(m.group(1)):
            return err(404, "NOT_FOUND", "No such endpoint: %s" % path), "normal"
        bid = m.group(1)
        if method not in allowed:
            return err(405, "METHOD_NOT_ALLOWED",
                       "Method %s not allowed here" % method,
                       headers=[("Allow", ", ".join(allowed))]), "normal"

        mm = MAGIC_RE.match(bid)
        name = None
        if mm:
            name = mm.group(1)
            if name.startswith("slow"):
                name = "slow"
            elif name.startswith("huge"):
                name = "huge"
            if kind == "get" and not self.server.magic_get \
                    and name not in GET_ALWAYS:
                name = None
        if name is not None:
            entry["fault"] = name

        if name in FIXED_FAULTS:
            return fixed_fault(name), "normal"
        if name == "silent":
            return None, "silent"
        if name == "ndrop":
            # the request never reached Billogram: nothing is paid
            return None, "drop"
        if name == "slow":
            STOP.wait(int(mm.group("ms")) / 1000.0)

        if kind == "pay":
            snap, error = self.pay(bid, body, entry["seq"])
        else:
            snap, error = STATE.get(bid), None
        how = TRANSPORT_FAULTS.get(name, "normal")
        if error is not None:
            return error, how
        return self.success_reply(name, snap, mm), how

    def pay(self, bid, body, seq):
        ctype = self.headers.get("Content-Type") or ""
        if ctype.split(";", 1)[0].strip().lower() != "application/json":
            return None, err(400, "INVALID_PARAMETER",
                             "Content-Type must be application/json")

        def bad_constant(c):
            raise ValueError(c)
        try:
            obj = json.loads(body.decode("utf-8"), parse_float=Decimal,
                             parse_int=Decimal, parse_constant=bad_constant)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return None, err(400, "INVALID_PARAMETER",
                             "Request body is not valid JSON")
        if not isinstance(obj, dict):
            return None, err(400, "INVALID_PARAMETER",
                             "Request body must be a JSON object")
        for k in obj:
            if k not in ("mode", "amount"):
                return None, err(400, "UNKNOWN_PARAMETER",
                                 "Unknown parameter: %s" % k, field=k)
        mode = obj.get("mode")
        if mode not in ("remaining", "amount") or not isinstance(mode, str):
            return None, err(400, "INVALID_PARAMETER",
                             "mode must be 'remaining' or 'amount'",
                             field="mode")
        amount = None
        if mode == "remaining":
            if "amount" in obj:
                return None, err(400, "INVALID_PARAMETER_COMBINATION",
                                 "amount must not be given with mode "
                                 "'remaining'", field="amount")
        else:
            amount = obj.get("amount")
            if "amount" not in obj:
                return None, err(400, "INVALID_PARAMETER",
                                 "amount is required with mode 'amount'",
                                 field="amount")
            if not isinstance(amount, Decimal) or not amount.is_finite() \
                    or amount <= 0:
                return None, err(400, "INVALID_PARAMETER",
                                 "amount must be a number greater than 0",
                                 field="amount")
        return STATE.pay(bid, mode, amount, seq)

    def success_reply(self, name, snap, mm):
        if name == "e504":
            return Resp(504, b'{"status":"GATEWAY_TIMEOUT","data":'
                             b'{"message":"upstream timeout"}}')
        # a500/a502: paid, but the proxy in front answers an error page
        if name == "a500":
            return html(500)
        if name == "a502":
            return Resp(502, b"", None)
        if name == "notjson":
            return Resp(200, b"hello", "text/plain")
        if name == "empty":
            return Resp(200, b"")
        if name == "wrongtype":
            return Resp(200, b'{"status":"OK","data":[1,2,3]}')
        if name == "nodata":
            return Resp(200, b'{"status":"OK"}')
        if name == "nostatus":
            return Resp(200, b'{"data":{"id":"x"}}')
        if name == "deep":
            return Resp(200, parts=[b'{"status":"OK","data":',
                                    b"[" * 100000, b"]" * 100000, b"}"])
        if name in ("huge", "bigok", "nul", "badutf", "latnul", "latx"):
            marker = "@@ATTACHMENT-%s@@" % name
            full = to_json({"status": "OK",
                            "data": STATE.data(snap, marker)})
            pre, post = full.split(marker.encode(), 1)
            if name == "huge":
                mid = Fill(int(mm.group("mib")) * 1024 * 1024)
            elif name == "bigok":
                mid = Fill(100 * 1024)
            elif name == "nul":
                mid = b"JVBERi0x\x00LjQK"
            elif name == "latnul":
                # valid JSON: the escape \u0000, which no jsonb can hold
                mid = b"JVBERi0x\\u0000LjQK"
            elif name == "latx":
                # valid UTF-8 that LATIN1 cannot hold: euro sign, l-stroke
                mid = "Faktura \u20ac 100, \u0141\u00f3d\u017a".encode("utf-8")
            else:
                mid = b"JVBERi0x\xff\xfeLjQK"
            return Resp(200, parts=[pre, mid, post])
        full = to_json({"status": "OK", "data": STATE.data(snap)})
        if name == "trunc":
            return Resp(200, full[:len(full) // 2])
        if name == "bighdr":
            # one 1 MiB header line before a valid success body
            return Resp(200, full, headers=[("X-Filler", "A" * (1024 * 1024))])
        return Resp(201 if name == "created" else 200, full)


API_SERVER = None


class ApiServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr, ctx, user, password, magic_get):
        self.ssl_ctx = ctx
        self.api_user = user
        self.api_password = password
        self.magic_get = magic_get
        self.open_conns = set()
        self.conns_lock = threading.Lock()
        super().__init__(addr, ApiHandler)

    def server_bind(self):
        # HTTPServer.server_bind does a (possibly slow) getfqdn(): skip it.
        TCPServer.server_bind(self)
        self.server_name = "localhost"
        self.server_port = self.server_address[1]

    def track(self, conn, add):
        with self.conns_lock:
            if add:
                self.open_conns.add(conn)
            else:
                self.open_conns.discard(conn)

    def drop_open_connections(self):
        with self.conns_lock:
            conns = list(self.open_conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def verify_request(self, request, client_address):
        # "down": close right after accept, no TLS, nothing recorded.
        return not STATE.is_down()

    def finish_request(self, request, client_address):
        # Runs in the connection's own thread: the TLS handshake is done
        # here, so a stalled client never blocks the accept loop.
        try:
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        request.settimeout(HANDSHAKE_TIMEOUT)
        try:
            conn = self.ssl_ctx.wrap_socket(request, server_side=True)
        except (OSError, ValueError) as e:
            LOG("api %s:%s TLS handshake failed: %s"
                % (client_address[0], client_address[1], e))
            return
        self.track(conn, True)
        try:
            self.RequestHandlerClass(conn, client_address, self)
        except (OSError, ValueError) as e:
            LOG("api %s:%s connection error: %s"
                % (client_address[0], client_address[1], e))
        except Exception as e:      # keep serving whatever happens
            LOG("api %s:%s handler error: %r"
                % (client_address[0], client_address[1], e))
        finally:
            self.track(conn, False)
            close_tls(conn)

    def shutdown_request(self, request):
        try:
            request.close()
        except OSError:
            pass

    def handle_error(self, request, client_address):
        LOG("api %s: unexpected error %r" % (client_address,
                                             sys.exc_info()[1]))


def close_tls(conn):
    """Close with a TLS close_notify, so the peer sees a clean end of stream."""
    try:
        conn.settimeout(0.5)
        conn.unwrap()
    except (OSError, ValueError):
        pass
    try:
        conn.close()
    except OSError:
        pass


# --------------------------------------------------------------------------
# Control port

def check_fault(f):
    if not isinstance(f, dict):
        raise ValueError("fault must be a JSON object")
    mode = f.get("mode")

    def num(key, lo, hi, required=True, integer=False):
        if f.get(key) is None:
            if required:
                raise ValueError("%s is required" % key)
            return
        v = f[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) \
                or (integer and not isinstance(v, int)) or not lo <= v <= hi:
            raise ValueError("bad %s" % key)

    if mode in ("none", "down"):
        return {"mode": mode}
    if mode == "status":
        num("status", 200, 599, integer=True)
        num("count", 0, 1 << 62, required=False, integer=True)
        num("for_s", 0, 86400, required=False)
        out = {"mode": "status", "status": f["status"]}
        if f.get("retry_after") is not None:
            num("retry_after", 0, 1 << 31, integer=True)
            out["retry_after"] = f["retry_after"]
        if f.get("count") is not None:
            out["count"] = f["count"]
        if f.get("for_s") is not None:
            out["for_s"] = f["for_s"]
        return out
    if mode == "slow":
        num("ms", 0, 3600 * 1000)
        return {"mode": "slow", "ms": f["ms"]}
    if mode == "random":
        num("rate", 0, 1)
        seed = f.get("seed")
        if not (seed is None or isinstance(seed, (int, float, str))):
            raise ValueError("bad seed")
        return {"mode": "random", "rate": f["rate"], "seed": seed}
    raise ValueError("mode must be none, down, status, slow or random")


def check_outside_payment(obj):
    """(mode, amount) of a control /invoice/{id}/pay body: {"amount":"12.50"}
    or {"mode":"remaining"}.  Raises ValueError.  What is left on the
    invoice is checked when paying, under the lock."""
    if not isinstance(obj, dict):
        raise ValueError("body must be a JSON object")
    for k in obj:
        if k not in ("mode", "amount"):
            raise ValueError("unknown key: %s" % k)
    mode = obj.get("mode", "amount")
    if mode == "remaining":
        if "amount" in obj:
            raise ValueError("amount must not be given with mode remaining")
        return "remaining", None
    if mode != "amount":
        raise ValueError("mode must be remaining or amount")
    a = obj.get("amount")
    # A string keeps the decimals as written; a JSON number is parsed as a
    # Decimal, so it is exact too.
    if isinstance(a, str) and AMOUNT_RE.match(a):
        a = Decimal(a)
    elif isinstance(a, int) and not isinstance(a, bool):
        a = Decimal(a)
    if not isinstance(a, Decimal) or not a.is_finite() or a <= 0:
        raise ValueError('amount must be a number greater than 0, '
                         'e.g. "12.50"')
    return "amount", a      # more than two decimals: refused when paying


def ctl_object(body):
    """The JSON object of a control request body, or raises ValueError."""
    try:
        obj = json.loads(body.decode("utf-8") or "null",
                         parse_float=Decimal)
    except UnicodeDecodeError:
        raise ValueError("body is not UTF-8")
    except RecursionError:
        raise ValueError("body is nested too deeply")
    if not isinstance(obj, dict):
        raise ValueError("body must be a JSON object")
    return obj


def check_callback(obj):
    """The members of a control /callback body, defaults filled in.
    Raises ValueError."""
    for k in obj:
        if k not in ("id", "key", "event", "timestamp", "encoding"):
            raise ValueError("unknown key: %s" % k)
    if not isinstance(obj.get("id"), str):
        raise ValueError("id (the billogram id) is required, a string")
    if not isinstance(obj.get("key"), str):
        raise ValueError("key (the sign key) is required, a string")
    event = obj.get("event", -1)
    if isinstance(event, bool) or not isinstance(event, int):
        raise ValueError("event must be an integer index into the events")
    ts = obj.get("timestamp")
    if ts is None:
        ts = "%.6f" % time.time()
    # It goes into a header and into the signed text: printable ASCII.
    if not isinstance(ts, str) or not TIMESTAMP_RE.match(ts):
        raise ValueError('timestamp must be a string such as '
                         '"1550155518.141119"')
    encoding = obj.get("encoding", "hex")
    if encoding not in ("hex", "base64"):
        raise ValueError("encoding must be hex or base64")
    return obj["id"], obj["key"], event, ts, encoding


def callback_body(snap, event):
    """The body Billogram POSTs for one event.  to_json escapes every
    non-ASCII character, so the text is ASCII and its bytes are the same in
    any encoding a receiver might assume."""
    body = to_json({"callback_id": str(uuid.uuid4()),
                    "callback_timestamp": now_iso(),
                    "callback_type": "BillogramEvent",
                    "custom": None,
                    "billogram": STATE.data(snap),
                    "event": event})
    return body.decode("ascii")


def sign_callback(key, timestamp, body, encoding):
    """Billogram-Signature: HMAC-SHA256 with the sign key over
    timestamp + ":" + the raw body."""
    mac = hmac.new(key.encode("utf-8"),
                   timestamp.encode("ascii") + b":" + body.encode("ascii"),
                   hashlib.sha256).digest()
    if encoding == "hex":
        return mac.hex()
    return base64.b64encode(mac).decode("ascii")


class CtlHandler(BaseHandler):
    tag = "ctl"

    def reply(self, status, obj=None, text=None):
        if text is not None:
            resp = Resp(status, text.encode(), "text/plain")
        else:
            resp = Resp(status, ctl_json(obj))
        self.deliver(resp)

    def do_GET(self):
        u = urlsplit(self.path)
        if u.path == "/health":
            return self.reply(200, text="ok")
        if u.path == "/requests":
            want = parse_qs(u.query).get("id")
            with STATE.lock:
                reqs = [dict(r) for r in STATE.requests
                        if want is None or r["id"] in want]
            return self.reply(200, reqs)
        if u.path == "/fault":
            with STATE.lock:
                return self.reply(200, dict(STATE.fault))
        if u.path.startswith("/invoice/"):
            inv = STATE.invoice_view(u.path[len("/invoice/"):])
            if inv is None:
                return self.reply(404, {"error": "no such invoice"})
            return self.reply(200, inv)
        return self.reply(404, {"error": "not found"})

    def do_POST(self):
        try:
            body = self.read_body()
        except BodyError as e:
            self.close_connection = True
            return self.reply(400, {"error": str(e)})
        u = urlsplit(self.path)
        if u.path == "/reset":
            STATE.reset()
            CLOCK.update(offset_s=0.0, naive=False)
            LOG("ctl reset")
            return self.reply(200, {"ok": True})
        if u.path == "/fault":
            try:
                f = check_fault(json.loads(body.decode("utf-8") or "null"))
            except (ValueError, UnicodeDecodeError) as e:
                return self.reply(400, {"error": str(e)})
            STATE.set_fault(f)
            LOG("ctl fault %s" % json.dumps(f))
            return self.reply(200, {"ok": True, "fault": f})
        if u.path == "/clock":
            try:
                c = check_clock(json.loads(body.decode("utf-8") or "null"))
            except (ValueError, UnicodeDecodeError) as e:
                return self.reply(400, {"error": str(e)})
            CLOCK.update(c)
            LOG("ctl clock %s" % json.dumps(c))
            return self.reply(200, {"ok": True, "clock": c})
        m = CTL_PAY_RE.match(u.path)
        if m:
            return self.pay_outside(m.group(1), body)
        if u.path == "/callback":
            return self.callback(body)
        return self.reply(404, {"error": "not found"})

    def callback(self, body):
        # What Billogram would POST to a callback URL for one event, with
        # its signature headers' values; the caller delivers it.  The body
        # goes back as a JSON string, whose value is the exact signed text.
        try:
            bid, key, index, ts, encoding = check_callback(ctl_object(body))
        except ValueError as e:
            return self.reply(400, {"error": str(e)})
        found = STATE.event_of(bid, index)
        if found is None:
            return self.reply(404, {"error": "no such invoice or event"})
        text = callback_body(*found)
        return self.reply(200, {"timestamp": ts,
                                "signature": sign_callback(key, ts, text,
                                                           encoding),
                                "body": text})

    def pay_outside(self, bid, body):
        # Someone paid the invoice by other means (bank giro, Billogram's
        # web UI): the invoice changes but no API request was made.
        if not ID_RE.match(bid):
            return self.reply(400, {"error": "bad invoice id"})
        try:
            mode, amount = check_outside_payment(ctl_object(body))
        except ValueError as e:
            return self.reply(400, {"error": str(e)})
        view, refused = STATE.pay_outside(bid, mode, amount)
        if refused is not None:
            return self.reply(400, {"error": refused})
        LOG("ctl pay %s %s" % (bid, view["payments"][-1]["amount"]))
        return self.reply(200, view)


class CtlServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def server_bind(self):
        TCPServer.server_bind(self)
        self.server_name = "localhost"
        self.server_port = self.server_address[1]

    def handle_error(self, request, client_address):
        LOG("ctl %s: unexpected error %r" % (client_address,
                                             sys.exc_info()[1]))


# --------------------------------------------------------------------------

def write_port_file(path, port):
    path = os.path.abspath(path)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".",
                               dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "w") as f:
            f.write("%d\n" % port)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def main(argv=None):
    global LOG
    p = argparse.ArgumentParser(description="Billogram API v2 mock server")
    p.add_argument("--cert", required=True, help="server certificate (PEM)")
    p.add_argument("--key", required=True, help="server private key (PEM)")
    p.add_argument("--user", required=True, help="API user id")
    p.add_argument("--password", required=True, help="API password")
    p.add_argument("--port-file", required=True,
                   help="API port is written here (atomically, last)")
    p.add_argument("--ctl-port-file", required=True,
                   help="control port is written here (before --port-file)")
    p.add_argument("--port", type=int, default=0, help="API port, 0 = any")
    p.add_argument("--ctl-port", type=int, default=0,
                   help="control port, 0 = any")
    p.add_argument("--log", help="append a log of requests to this file")
    p.add_argument("--magic-get", action="store_true",
                   help="apply every magic id to GET /billogram/{id} too")
    args = p.parse_args(argv)

    LOG = Log(args.log)
    with open(TEMPLATE_FILE, "rb") as f:
        STATE.template = json.loads(f.read())["data"]

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(args.cert, args.key)

    global API_SERVER
    api = ApiServer(("127.0.0.1", args.port), ctx, args.user, args.password,
                    args.magic_get)
    API_SERVER = api
    ctl = CtlServer(("127.0.0.1", args.ctl_port), CtlHandler)

    def on_signal(signum, frame):
        STOP.set()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    for srv in (api, ctl):
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.2},
                         daemon=True).start()
    write_port_file(args.ctl_port_file, ctl.server_address[1])
    write_port_file(args.port_file, api.server_address[1])
    LOG("listening: api https://127.0.0.1:%d ctl http://127.0.0.1:%d pid %d"
        % (api.server_address[1], ctl.server_address[1], os.getpid()))

    # A test that dies without stopping the mock must not leave it running
    # (it would hold whatever the test's caller holds, a lock or a port):
    # it goes when the process that started it is gone.
    parent = os.getppid()
    while not STOP.wait(0.1):
        if os.getppid() != parent:
            LOG("stopping: the process that started the mock is gone")
            break
    LOG("stopping on signal")
    try:
        api.socket.close()
        ctl.socket.close()
    except OSError:
        pass
    sys.stdout.flush()
    sys.stderr.flush()
    # Connection threads are daemons that may sit in blocking I/O; do not
    # wait for them.
    os._exit(0)


if __name__ == "__main__":
    main()
