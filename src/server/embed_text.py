#!/usr/bin/env python3
"""Writes a C file that defines one NUL-terminated char array holding a file,
and SYMBOL_len, its length without the NUL: embed_text.py INPUT OUTPUT SYMBOL.
Used to build the ImageNet-1k labels and the try-it page into the binaries
so that they need no data files at run time."""
import sys


def c_bytes(data):
    """A brace initializer, 16 bytes a line: string literals that long
    would exceed the length ISO C requires compilers to support."""
    data = data + b"\0"
    lines = []
    for i in range(0, len(data), 16):
        # Bytes past 0x7f (UTF-8) cast: char may be signed.
        lines.append("        " + ", ".join(("0x%02x" if b < 0x80 else "(char)0x%02x") % b
                                          for b in data[i:i + 16]) + ",")
    return "{\n" + "\n".join(lines) + "\n}"


def main():
    src, dst, symbol = sys.argv[1:4]
    with open(src, "rb") as f:
        data = f.read()
    with open(dst, "w", encoding="ascii") as f:
        f.write("/* Generated from %s by embed_text.py; do not edit. */\n" % src.rsplit("/", 1)[-1])
        f.write("#include <stddef.h>\n")
        f.write("extern const char %s[];\n" % symbol)
        f.write("extern const size_t %s_len;\n" % symbol)
        f.write("const char %s[] = %s;\n" % (symbol, c_bytes(data)))
        f.write("const size_t %s_len = %d;\n" % (symbol, len(data)))


if __name__ == "__main__":
    main()
