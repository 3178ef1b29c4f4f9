"""MkDocs hook: publish the example notebooks (``notebooks/*.ipynb``) with the documentation.

The notebooks live in the repository's ``notebooks/`` folder, outside ``docs/`` (they are run
from there by the tests and by users). This hook adds them to the site as
``notebooks/<name>.ipynb``, where mkdocs-jupyter renders them as pages with their stored outputs,
and rewrites the pages' links to them: the Markdown sources link to ``../notebooks/<name>.ipynb``
(which also works when reading ``docs/`` on GitHub), the site to its own copy.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent


@event_priority(100)  # before mkdocs-jupyter turns .ipynb files into pages
def on_files(files: Files, config) -> Files:
    """Add every notebook of ``notebooks/`` to the site's files."""
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        # A file of the repository root (not of docs/), published at notebooks/<name>.
        files.append(File(f"notebooks/{path.name}", src_dir=str(ROOT), dest_dir=config["site_dir"],
                          use_directory_urls=config["use_directory_urls"]))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    """Point links to the repository's notebooks at the site's copies."""
    up = "../" * page.file.src_uri.count("/")
    return markdown.replace(f"]({up}../notebooks/", f"]({up}notebooks/")
