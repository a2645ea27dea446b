"""Small text-file helpers for the converter's fault tests: copies of the shipped
samples with one line or cell changed."""


def read_lines(path):
    with open(path, "rb") as f:
        return f.read().splitlines()


def write_lines(path, lines):
    with open(path, "wb") as f:
        f.write(b"\n".join(lines) + b"\n")
    return str(path)


def with_cell(source, target, line, column, value: bytes, sep=b","):
    """A copy of `source` whose `line` (1-based) has `value` in `column`."""
    lines = read_lines(source)
    cells = lines[line - 1].split(sep)
    cells[column] = value
    lines[line - 1] = sep.join(cells)
    return write_lines(target, lines)
