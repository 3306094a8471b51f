"""Report: the tear sheet of a run as one self-contained HTML file.

- :mod:`colmena.report.html`: :func:`render_html`, with interactive plotly charts.
"""

from colmena.report.html import render_html

__all__ = ["render_html"]
