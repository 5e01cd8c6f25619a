"""What tools/make_NN.py share: cells collected in order by :func:`md` and :func:`code`, then :func:`write`."""

import nbformat as nbf

CELLS = []


def md(text):
    CELLS.append(nbf.v4.new_markdown_cell(text.strip("\n")))


def code(text, check=False, tags=()):
    cell = nbf.v4.new_code_cell(text.strip("\n"))
    tags = list(tags) + (["nbval-check-output"] if check else [])
    if tags:
        cell.metadata["tags"] = tags
    CELLS.append(cell)


def write(path):
    """The notebook, unexecuted (``python notebooks/measure.py --write PATH`` executes it in place)."""
    nb = nbf.v4.new_notebook()
    nb.cells = CELLS
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    nbf.write(nb, path)
    print(f"wrote {path}")
