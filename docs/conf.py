"""Sphinx configuration of the course website (built by ``python -m course.site``; see there).

The source folder is ``build/site-src/`` (the committed notebooks copied as they are, plus the
pages ``course.site`` writes); myst-nb renders the notebooks' stored outputs and never executes
them. Every asset is local: the theme's own files and MathJax 3 (see ``course.assets``).
"""

import json
import os
import re

project = "Practical deep-learning training"
author = "The course's authors"
copyright = "the course's authors, MIT licence"
extensions = ["myst_nb"]
templates_path = ["_templates"]
html_static_path = ["_static"] + [p for p in [os.environ.get("COURSE_SITE_ASSETS")] if p]
html_css_files = ["course-site.css"]
exclude_patterns = ["_build", "_assets", "**.ipynb_checkpoints"]
root_doc = "index"

nb_execution_mode = "off"  # the site shows the committed outputs, nothing is re-executed
nb_execution_raise_on_error = True
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3

html_theme = "sphinx_book_theme"
html_title = project
html_copy_source = True
html_sourcelink_suffix = ""  # _sources/NN_name.ipynb is the notebook itself, downloadable
html_theme_options = {
    "use_download_button": True,
    "use_fullscreen_button": False,
    "show_toc_level": 2,
    "article_header_end": ["course-links.html", "article-header-buttons.html"],
    "navigation_with_keys": False,
}
html_favicon = "_static/favicon.svg"
html_context = {
    "course_slides": json.loads(os.environ.get("COURSE_SITE_SLIDES", "{}")),
    "default_mode": "light",
}

# MathJax 3 (SVG output: no web fonts) copied from the django-static-mathjax package (no CDN).
mathjax_path = "mathjax/tex-svg.js"
mathjax3_config = {
    "tex": {
        "inlineMath": [["\\(", "\\)"]],
        "displayMath": [["\\[", "\\]"]],
        "processEscapes": True,
        "processEnvironments": True,
    },
    "options": {"processHtmlClass": "tex2jax_process|mathjax_process|math|output_area"},
    "svg": {"fontCache": "global"},
}
myst_dmath_double_inline = True

# Jupyter takes math out of markdown before parsing it; CommonMark does not, so a display formula
# written over several lines, one of them starting with "+" or "-", turns into a list. Each
# notebook's $$…$$ blocks are joined onto one line as the page is read (the notebook file, and
# the copy offered for download, stay as committed).
DISPLAY_MATH = re.compile(r"\$\$(.+?)\$\$", re.S)


def one_line_display_math(app, docname, source):
    if not str(app.env.doc2path(docname)).endswith(".ipynb"):
        return
    notebook = json.loads(source[0])
    changed = False
    for cell in notebook.get("cells", []):
        if cell.get("cell_type") != "markdown":
            continue
        text = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        joined = DISPLAY_MATH.sub(lambda m: "$$" + " ".join(m.group(1).split("\n")) + "$$", text)
        if joined != text:
            cell["source"] = joined
            changed = True
    if changed:
        source[0] = json.dumps(notebook)


def setup(app):
    app.connect("source-read", one_line_display_math)
