"""Fill in bench/nginx.conf: ports, directories, and the reply body.

usage: render-nginx.py TEMPLATE BODY_FILE OUT DIR CERTS FAST_PORT SLOW_PORT

The body goes into nginx "set" variables, byte for byte: nginx reads a
quoted string with backslash escapes and expands "$" as a variable, and a
single configuration token may not exceed 4 kB, so the body is escaped and
cut into pieces that the reply joins again.
"""
import sys

PIECE = 3000   # escaped bytes per token, well under nginx's 4096


def main():
    tmpl, body_file, out, workdir, certs, fast, slow = sys.argv[1:]
    # latin-1 maps every byte to one character and back: exact bytes
    body = open(body_file, "rb").read().decode("latin-1")
    if "\0" in body:
        sys.exit("render-nginx.py: the body has a NUL byte")
    pieces, cur, cur_len = [], [], 0
    for ch in body:
        esc = {"\\": "\\\\", "'": "\\'", "$": "${bg_dollar}"}.get(ch, ch)
        if cur_len + len(esc) > PIECE:
            pieces.append("".join(cur))
            cur, cur_len = [], 0
        cur.append(esc)
        cur_len += len(esc)
    if cur or not pieces:
        pieces.append("".join(cur))
    sets = "\n".join("\t\t\tset $bg_body_%d '%s';" % (i, p)
                     for i, p in enumerate(pieces))
    names = "".join("$bg_body_%d" % i for i in range(len(pieces)))
    conf = open(tmpl, encoding="latin-1").read()
    # the body last, so that nothing in it is taken for a field
    for key, val in (("@DIR@", workdir), ("@CERTS@", certs),
                     ("@FAST_PORT@", fast), ("@SLOW_PORT@", slow),
                     ("@BODY_VARS@", names), ("@BODY_SET@", sets)):
        conf = conf.replace(key, val)
    with open(out, "w", encoding="latin-1") as f:
        f.write(conf)


main()
