#!/usr/bin/env bash
# Checks the packaging files against each other, so that none of them drifts
# when the version changes: META.json is valid PGXN Meta 1.0.0
# (tests/pgxn_meta.py, offline) and says the control file's default_version, the control file keeps the fields reviewed for
# issue 12, LICENSE is the PostgreSQL License, the install script of the
# default version exists, and the Debian package (debian/) has that version
# and LICENSE's text.  Prints "ok"/"not ok" lines and a closing count.
set -uo pipefail

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$top"

python3 - <<'PY'
import copy, json, re, sys, os
sys.path.insert(0, "tests")
import pgxn_meta

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
invalid = pgxn_meta.errors(meta, ".")
for e in invalid:
    print(f"# META.json: {e}")
check(not invalid, "META.json is valid PGXN Meta 1.0.0: required keys, their types, the files it names")

# the validator itself: a META.json broken as 0.3's was, and in other ways,
# must be refused, or the check above proves nothing
def broken(change):
    m = copy.deepcopy(meta)
    change(m)
    return pgxn_meta.errors(m, ".")
check("provides.billogram.file is required" in
      broken(lambda m: m["provides"]["billogram"].pop("file", None)),
      "the validator refuses an extension without its file (META.json of 0.3)")
check(any("not in the distribution" in e for e in
          broken(lambda m: m["provides"]["billogram"].update(file="sql/missing.sql"))),
      "the validator refuses a file that is not in the distribution")
check("maintainer is required" in broken(lambda m: m.pop("maintainer", None)),
      "the validator refuses a META.json without maintainer")
check("version must be a SemVer" in broken(lambda m: m.update(version="0.3")),
      "the validator refuses a version that is not a SemVer")
check(any("license" in e for e in broken(lambda m: m.update(license="PostgreSQL"))),
      "the validator refuses a license name the spec does not know")
check(any("unknown key" in e for e in broken(lambda m: m.update(homepage="x"))),
      "the validator refuses a key the spec does not define")

check(meta.get("name") == "billogram", "META.json: name billogram")
check(meta.get("version") == semver,
      f"META.json: version {meta.get('version')!r} is the control file's {version!r} as {semver}")
prov = meta.get("provides", {}).get("billogram", {})
check(prov.get("version") == semver, f"META.json: provides billogram {prov.get('version')!r} = {semver}")
script = f"sql/billogram--{version}.sql"
check(not os.path.exists(script) or prov.get("file") == script,
      f"META.json: provides billogram's file is {script}, the install script of the default version")
check(meta.get("license") == "postgresql", "META.json: license postgresql")

lic = open("LICENSE").read() if os.path.exists("LICENSE") else ""
check("Copyright (c) 2026, the billogram developers" in lic and
      "Permission to use, copy, modify, and distribute this software" in lic,
      "LICENSE: the PostgreSQL License, the billogram developers 2026")

# debian/: the package's version is the extension's (0.3-1 packages 0.3),
# and its copyright file carries the LICENSE word for word
deb_version = ""
if os.path.exists("debian/changelog"):
    first = open("debian/changelog").readline()
    m = re.match(r"billogram \(([^)]*)\)", first)
    deb_version = m.group(1) if m else ""
upstream = re.sub(r"^[0-9]+:", "", deb_version).rsplit("-", 1)[0]
check(upstream == version,
      f"debian/changelog: version {deb_version!r} packages the control file's {version!r}")
license_para = ""
if os.path.exists("debian/copyright"):
    text = open("debian/copyright").read()
    m = re.search(r"^License: PostgreSQL\n((?: .*\n?)+)", text, re.M)
    if m:
        license_para = "\n".join("" if l.strip() == "." else l[1:]
                                 for l in m.group(1).rstrip("\n").split("\n"))
body = lic[lic.find("Permission to use"):].rstrip("\n")
check(bool(license_para) and license_para == body,
      "debian/copyright: its License: PostgreSQL paragraph is LICENSE's text")

print(f"packaging: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
PY
