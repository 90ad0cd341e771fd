#!/usr/bin/env bash
# Checks the packaging files against each other, so that none of them drifts
# when the version changes: META.json (PGXN, meta-spec 1.0.0) says the control
# file's default_version, the control file keeps the fields reviewed for
# issue 12, LICENSE is the PostgreSQL License, and the install script of the
# default version exists.  Prints "ok"/"not ok" lines and a closing count.
set -uo pipefail

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$top"

python3 - <<'PY'
import json, re, sys, os

passed = failed = 0
def check(ok, what):
    global passed, failed
    print(("ok - " if ok else "not ok - ") + what)
    if ok:
        passed += 1
    else:
        failed += 1

control = {}
for line in open("billogram.control"):
    line = line.split("#", 1)[0].strip()
    if not line:
        continue
    key, _, value = line.partition("=")
    control[key.strip()] = value.strip().strip("'")

version = control.get("default_version", "")
check(re.fullmatch(r"[0-9]+\.[0-9]+(\.[0-9]+)?", version) is not None,
      f"control: default_version '{version}' is MAJOR.MINOR[.PATCH]")
check(control.get("module_pathname") == "$libdir/billogram", "control: module_pathname is $libdir/billogram")
check(control.get("relocatable") == "false", "control: relocatable = false")
check(control.get("superuser") == "true", "control: superuser = true")
check(control.get("trusted") == "false", "control: trusted = false, said explicitly")
check(control.get("schema") == "billogram", "control: schema = billogram, its own")
check(os.path.exists(f"sql/billogram--{version}.sql") or
      any(re.fullmatch(rf"billogram--[0-9.]+--{re.escape(version)}\.sql", f) for f in os.listdir("sql")),
      f"an install or upgrade script reaches version {version}")

# PGXN wants semantic versions: '0.1' is published as 0.1.0
semver = ".".join((version.split(".") + ["0", "0"])[:3])
try:
    meta = json.load(open("META.json"))
except Exception as e:
    meta = {}
    check(False, f"META.json parses: {e}")
else:
    check(True, "META.json parses")
check(meta.get("meta-spec", {}).get("version") == "1.0.0", "META.json: meta-spec 1.0.0")
check(meta.get("name") == "billogram", "META.json: name billogram")
check(meta.get("version") == semver,
      f"META.json: version {meta.get('version')!r} is the control file's {version!r} as {semver}")
prov = meta.get("provides", {}).get("billogram", {})
check(prov.get("version") == semver, f"META.json: provides billogram {prov.get('version')!r} = {semver}")
check(all(meta.get(k) for k in ("abstract", "maintainer", "license")),
      "META.json: abstract, maintainer and license present")
check(meta.get("license") == "postgresql", "META.json: license postgresql")

lic = open("LICENSE").read() if os.path.exists("LICENSE") else ""
check("Copyright (c) 2026, the billogram developers" in lic and
      "Permission to use, copy, modify, and distribute this software" in lic,
      "LICENSE: the PostgreSQL License, the billogram developers 2026")

print(f"packaging: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
PY
