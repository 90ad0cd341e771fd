#!/usr/bin/env python3
"""Validity of a META.json against the PGXN Meta Spec 1.0.0.

PGXN refuses a release whose META.json breaks the spec (https://pgxn.org/spec/),
and nothing in the build notices: `provides.billogram` went without its
required `file` until issue 22.  This checks what the spec requires, and the
type of every key it defines, with the standard library only, so that
tests/packaging.sh runs it offline:

- required: name (a Term), version (a SemVer), abstract, maintainer, license,
  provides (each extension with file and version), meta-spec (version 1.0.x);
- optional, when present: description, generated_by, tags, no_index,
  prereqs, release_status, resources;
- no other key but custom ones (x_ or X_), at the top and in every object
  the spec closes.

Paths are relative, in Unix form, and when a distribution root is given the
files named by provides must exist in it.

    python3 tests/pgxn_meta.py [META.json]   # prints each error; exit 1 if any
"""
import json
import os
import re
import sys

# https://semver.org's suggested expression, as the spec's schema uses it
SEMVER = (r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
          r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)"
          r"(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
          r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?")
VERSION_RANGE = re.compile(
    rf"(?:(?:[=!]=|[<>]=?)\s*)?(?:{SEMVER}|0)"
    rf"(?:,\s*(?:(?:[=!]=|[<>]=?)\s*)?{SEMVER})*")
LICENSES = {
    "agpl_3", "apache_1_1", "apache_2_0", "artistic_1", "artistic_2", "bsd",
    "freebsd", "gfdl_1_2", "gfdl_1_3", "gpl_1", "gpl_2", "gpl_3", "lgpl_2_1",
    "lgpl_3_0", "mit", "mozilla_1_0", "mozilla_1_1", "openssl", "perl_5",
    "postgresql", "qpl_1_0", "ssleay", "sun", "zlib", "open_source",
    "restricted", "unrestricted", "unknown",
}
PHASES = {"configure", "build", "test", "runtime", "develop"}
RELATIONSHIPS = {"requires", "recommends", "suggests", "conflicts"}
SPEC_URLS = {"https://pgxn.org/meta/spec.txt", "http://pgxn.org/meta/spec.txt"}


def is_custom(key):
    return re.fullmatch(r"[xX]_.+", key) is not None


def is_text(v):
    return isinstance(v, str) and len(v) > 0


def is_term(v):
    """At least two characters; no slash, backslash, space or control."""
    return (isinstance(v, str) and len(v) >= 2 and
            not any(c in "/\\" or c.isspace() or ord(c) < 32 or ord(c) == 127
                    for c in v))


def is_tag(v):
    return (isinstance(v, str) and 2 <= len(v) <= 255 and
            not any(c in "/\\" or ord(c) < 32 or ord(c) == 127 for c in v))


def is_semver(v):
    return isinstance(v, str) and re.fullmatch(SEMVER, v) is not None


def is_path(v):
    """Relative, in Unix form, inside the distribution."""
    return (isinstance(v, str) and len(v) >= 2 and not v.startswith("/") and
            "\\" not in v and ".." not in v.split("/"))


class Checker:
    def __init__(self, root):
        self.root = root
        self.errors = []

    def need(self, ok, what):
        if not ok:
            self.errors.append(what)
        return ok

    def closed(self, obj, where, allowed):
        """An object the spec closes: only its keys and custom ones."""
        for key in obj:
            self.need(key in allowed or is_custom(key),
                      f"{where}: unknown key {key!r}")

    def obj(self, v, where):
        return self.need(isinstance(v, dict), f"{where} must be an object")

    def file_in_dist(self, where, path):
        """A Path, naming a file of the distribution when its root is known."""
        if self.need(is_path(path), f"{where} must be a relative Unix path") and \
                self.root is not None:
            self.need(os.path.isfile(os.path.join(self.root, path)),
                      f"{where} {path!r} is not in the distribution")

    def extension(self, name, ext):
        where = f"provides.{name}"
        if not self.obj(ext, where):
            return
        self.closed(ext, where, {"file", "version", "abstract", "docfile", "docpath"})
        for key in ("file", "version"):
            self.need(key in ext, f"{where}.{key} is required")
        for key in ("file", "docfile"):
            if key in ext:
                self.file_in_dist(f"{where}.{key}", ext[key])
        if "version" in ext:
            self.need(is_semver(ext["version"]), f"{where}.version must be a SemVer")
        if "abstract" in ext:
            self.need(is_text(ext["abstract"]), f"{where}.abstract must be a non-empty string")
        if "docpath" in ext:
            self.need(is_text(ext["docpath"]), f"{where}.docpath must be a non-empty string")

    def license(self, v):
        if isinstance(v, str):
            self.need(v in LICENSES, f"license {v!r} is not one of the spec's names")
        elif isinstance(v, list):
            self.need(len(v) > 0 and all(x in LICENSES for x in v),
                      "license: a list must name at least one of the spec's licenses, and only those")
        elif isinstance(v, dict):
            self.need(len(v) > 0 and all(isinstance(u, str) and re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", u)
                                         for u in v.values()),
                      "license: an object must map each license's name to its URI")
        else:
            self.need(False, "license must be a string, a list or an object")

    def prereqs(self, v):
        if not self.obj(v, "prereqs"):
            return
        self.closed(v, "prereqs", PHASES)
        for phase, rels in v.items():
            if is_custom(phase) or not self.obj(rels, f"prereqs.{phase}"):
                continue
            self.closed(rels, f"prereqs.{phase}", RELATIONSHIPS)
            for rel, reqs in rels.items():
                where = f"prereqs.{phase}.{rel}"
                if is_custom(rel) or not self.obj(reqs, where):
                    continue
                for name, rng in reqs.items():
                    self.need(is_term(name), f"{where}: {name!r} is not a Term")
                    self.need(rng == 0 or (isinstance(rng, str) and
                                           VERSION_RANGE.fullmatch(rng) is not None),
                              f"{where}.{name}: {rng!r} is not a version range")

    def no_index(self, v):
        if not self.obj(v, "no_index"):
            return
        self.closed(v, "no_index", {"file", "directory"})
        self.need("file" in v or "directory" in v, "no_index needs file or directory")
        for key in ("file", "directory"):
            if key in v:
                paths = v[key] if isinstance(v[key], list) else [v[key]]
                self.need(len(paths) > 0 and all(is_path(p) for p in paths),
                          f"no_index.{key} must be a relative Unix path or a list of them")

    def resources(self, v):
        if not self.obj(v, "resources"):
            return
        self.closed(v, "resources", {"homepage", "bugtracker", "repository"})
        if "homepage" in v:
            self.need(is_text(v["homepage"]), "resources.homepage must be a URI")
        for key, members in (("bugtracker", {"web", "mailto"}),
                             ("repository", {"url", "web", "type"})):
            if key in v and self.obj(v[key], f"resources.{key}"):
                self.closed(v[key], f"resources.{key}", members)
                self.need(all(is_text(x) for k, x in v[key].items() if not is_custom(k)),
                          f"resources.{key}: every value must be a non-empty string")

    def check(self, meta):
        if not self.obj(meta, "META.json"):
            return self.errors
        self.closed(meta, "META.json", {
            "name", "version", "abstract", "maintainer", "license", "provides",
            "meta-spec", "description", "generated_by", "tags", "no_index",
            "prereqs", "release_status", "resources"})
        for key in ("name", "version", "abstract", "maintainer", "license",
                    "provides", "meta-spec"):
            self.need(key in meta, f"{key} is required")

        # the spec's version first: a consumer stops reading when it is not 1.0.x
        spec = meta.get("meta-spec")
        if spec is not None and self.obj(spec, "meta-spec"):
            self.closed(spec, "meta-spec", {"version", "url"})
            self.need(isinstance(spec.get("version"), str) and
                      re.fullmatch(r"1\.0\.[0-9]+", spec["version"]) is not None,
                      "meta-spec.version must be 1.0.x")
            if "url" in spec:
                self.need(spec["url"] in SPEC_URLS, "meta-spec.url must be the spec's own")

        if "name" in meta:
            self.need(is_term(meta["name"]), "name must be a Term")
        if "version" in meta:
            self.need(is_semver(meta["version"]), "version must be a SemVer")
        for key in ("abstract", "description", "generated_by"):
            if key in meta:
                self.need(is_text(meta[key]), f"{key} must be a non-empty string")
        if "maintainer" in meta:
            m = meta["maintainer"]
            self.need(is_text(m) or (isinstance(m, list) and len(m) > 0 and
                                     all(is_text(x) for x in m)),
                      "maintainer must be a non-empty string or list of them")
        if "license" in meta:
            self.license(meta["license"])
        if "provides" in meta and self.obj(meta["provides"], "provides"):
            self.need(len(meta["provides"]) > 0, "provides must name an extension")
            for name, ext in meta["provides"].items():
                self.need(is_term(name), f"provides: {name!r} is not a Term")
                self.extension(name, ext)
        if "tags" in meta:
            t = meta["tags"]
            self.need(isinstance(t, list) and len(t) > 0 and all(is_tag(x) for x in t),
                      "tags must be a non-empty list of tags (2 to 255 characters, no slashes)")
        if "release_status" in meta:
            self.need(meta["release_status"] in ("stable", "testing", "unstable"),
                      "release_status must be stable, testing or unstable")
        if "no_index" in meta:
            self.no_index(meta["no_index"])
        if "prereqs" in meta:
            self.prereqs(meta["prereqs"])
        if "resources" in meta:
            self.resources(meta["resources"])
        return self.errors


def errors(meta, root=None):
    """Every way meta breaks the spec; root, if given, is where its files are."""
    return Checker(root).check(meta)


if __name__ == "__main__":
    path = sys.argv[1] if len(sys.argv) > 1 else "META.json"
    found = errors(json.load(open(path)), os.path.dirname(os.path.abspath(path)))
    for e in found:
        print(f"{path}: {e}")
    if not found:
        print(f"{path} is valid PGXN Meta 1.0.0")
    sys.exit(1 if found else 0)
