"""Write fastconv/_kernels/winograd_transforms.h: the 1-D Winograd transforms of
fastconv._winograd_math.POINTS as C macros on arrays of vectors.

    python tools/gen_winograd.py            # rewrite the header
    python tools/gen_winograd.py --check    # exit 1 if the header is out of date

The rows of B^T (and columns of A^T) of a point pair +-p differ only in the signs
of their odd (even) terms, so each pair costs one even and one odd partial sum
and an add and a subtract: the kernels' transforms do no multiply by 0 or 1 and
about half the multiply-adds of dense 6x6 / 8x8 products.
"""
import importlib.util
import sys
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEADER = ROOT / "fastconv" / "_kernels" / "winograd_transforms.h"


def _math():
    spec = importlib.util.spec_from_file_location("_winograd_math", ROOT / "fastconv" / "_winograd_math.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _literal(c):
    c = Fraction(c)
    text = str(c.numerator) if c.denominator == 1 else repr(c.numerator / c.denominator)
    if "." not in text and "e" not in text:
        text += ".0"
    return f"(S){text}"


def _sum(terms):
    """C expression for sum of coefficient * operand, no multiply by +-1, 0 if empty."""
    out = ""
    for c, operand in terms:
        if c == 0:
            continue
        if abs(c) == 1:
            piece = operand
        else:
            piece = f"{_literal(abs(c))} * {operand}"
        if not out:
            out = piece if c > 0 else f"-{piece}"
        else:
            out += (" + " if c > 0 else " - ") + piece
    return out or "zero"


def _pair_sign(a, b, odd_flips):
    """s such that b[j] == s * a[j] * (-1 if j odd flips else 1), or None."""
    for s in (1, -1):
        if all(b[j] == s * a[j] * (-1 if odd_flips(j) else 1) for j in range(len(a))):
            return s
    return None


def _rows_macro(name, M, comment):
    """out[i] = sum_j M[i][j] in[j], rows of +-p pairs shared as even +- odd parts."""
    rows, cols = len(M), len(M[0])
    lines, done, temps = [], set(), 0
    for a in range(rows):
        if a in done:
            continue
        done.add(a)
        partner = None
        for b in range(a + 1, rows):
            if b not in done and any(M[a][j] != 0 for j in range(1, cols, 2)) \
                    and any(M[a][j] != 0 for j in range(0, cols, 2)):
                s = _pair_sign(M[a], M[b], lambda j: j % 2 == 1)
                if s is not None:
                    partner, sign = b, s
                    break
        if partner is None:
            lines.append(f"out[{a}] = {_sum([(M[a][j], f'in[{j}]') for j in range(cols)])};")
            continue
        done.add(partner)
        e, o = f"e{temps}", f"o{temps}"
        temps += 1
        lines.append(f"V {e} = {_sum([(M[a][j], f'in[{j}]') for j in range(0, cols, 2)])};")
        lines.append(f"V {o} = {_sum([(M[a][j], f'in[{j}]') for j in range(1, cols, 2)])};")
        lines.append(f"out[{a}] = {e} + {o};")
        lines.append(f"out[{partner}] = " + (f"{e} - {o};" if sign == 1 else f"{o} - {e};"))
    return _macro(name, lines, comment)


def _cols_macro(name, M, comment):
    """out[i] = sum_j M[i][j] in[j], the columns of +-p pairs summed and differenced first."""
    rows, cols = len(M), len(M[0])
    T = [[M[i][j] for i in range(rows)] for j in range(cols)]   # columns as rows
    lines, terms, done, temps = [], [[] for _ in range(rows)], set(), 0
    for a in range(cols):
        if a in done:
            continue
        done.add(a)
        partner = None
        for b in range(a + 1, cols):
            if b not in done and any(T[a][i] != 0 for i in range(1, rows, 2)):
                s = _pair_sign(T[a], T[b], lambda i: i % 2 == 1)
                if s is not None:
                    partner, sign = b, s
                    break
        if partner is None:
            for i in range(rows):
                terms[i].append((T[a][i], f"in[{a}]"))
            continue
        done.add(partner)
        p, q = f"p{temps}", f"q{temps}"
        temps += 1
        # in[b] == sign * (+-) ... : even rows see in[a] + sign*in[b], odd rows in[a] - sign*in[b]
        lines.append(f"V {p} = in[{a}] " + ("+" if sign == 1 else "-") + f" in[{partner}];")
        lines.append(f"V {q} = in[{a}] " + ("-" if sign == 1 else "+") + f" in[{partner}];")
        for i in range(rows):
            terms[i].append((T[a][i], p if i % 2 == 0 else q))
    for i in range(rows):
        lines.append(f"out[{i}] = {_sum(terms[i])};")
    return _macro(name, lines, comment)


def _macro(name, lines, comment):
    cont = " \\\n"
    body = "".join("        " + line + cont for line in lines)
    return ("/* " + comment + " */\n#define " + name + "(V, S, in, out)" + cont + "    do {" + cont
            + "        const V zero = {0}; (void)zero;" + cont + body + "    } while (0)\n")


def generate():
    wm = _math()
    parts = ['/* Generated by tools/gen_winograd.py from fastconv/_winograd_math.py: do not edit. */',
             "#ifndef FASTCONV_WINOGRAD_TRANSFORMS_H", "#define FASTCONV_WINOGRAD_TRANSFORMS_H", ""]
    for dtype, (m, points) in wm.POINTS.items():
        AT, _, BT = wm.matrices(m, points)
        n = m + 2
        pts = ", ".join(str(p) for p in points)
        parts.append(f"/* F({m}x{m}, 3x3) for {dtype}: points {pts}, inf. */")
        parts.append(f"#define WG_M{m} {m}\n")
        parts.append(_rows_macro(f"WG_BT{m}", BT, f"out[0..{n}) = B^T in[0..{n})"))
        parts.append(_cols_macro(f"WG_AT{m}", AT, f"out[0..{m}) = A^T in[0..{n})"))
    parts.append("#endif")
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    text = generate()
    if "--check" in sys.argv:
        sys.exit(0 if HEADER.exists() and HEADER.read_text() == text else 1)
    HEADER.write_text(text)
