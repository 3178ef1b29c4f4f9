"""MkDocs hook and griffe extension: notebooks in the site, cross-references in the API pages.

The notebooks live in the repository's ``notebooks/`` folder, outside ``docs/`` (they are run
from there by the tests and by users). This hook adds them to the site as
``notebooks/<name>.ipynb``, where mkdocs-jupyter renders them as pages with their stored outputs,
and rewrites the pages' links to them: the Markdown sources link to ``../notebooks/<name>.ipynb``
(which also works when reading ``docs/`` on GitHub), the site to its own copy.

The docstrings use Sphinx roles (``:func:`~imcascade_jax.analysis.flux```), which mkdocstrings
would show as literal text. :class:`SphinxRolesToAutorefs`, a griffe extension loaded by
mkdocstrings (``mkdocs.yml``), rewrites them as mkdocs-autorefs cross-references when the package
is loaded, before the docstrings are rendered.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import griffe
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


# --------------------------------------------------------------------------------------------
# Sphinx roles in docstrings -> mkdocs-autorefs cross-references (a griffe extension)

#: A Sphinx cross-reference role: ``:func:`name```, ``:meth:`~a.b.c```, ``:class:`title <a.b>```.
SPHINX_ROLE = re.compile(r":(?:py:)?(?:mod|func|meth|class|data|attr|obj|exc|const):`([^`]+)`")
#: The package whose objects are documented; references elsewhere become plain code.
PACKAGE = "imcascade_jax"


def _split_role(text: str) -> tuple[str, str]:
    """``(title, target)`` of a role's text: ``a.b``, ``~a.b`` (title ``b``) or ``title <a.b>``."""
    explicit = re.fullmatch(r"(.*?)\s*<([^<>]+)>", text, flags=re.S)
    if explicit:
        return explicit.group(1).strip(), explicit.group(2).strip()
    target = text.strip()
    if target.startswith("~"):
        target = target[1:]
        return target.rsplit(".", 1)[-1], target
    return target, target


def _documented_path(obj: Any, target: str) -> str | None:
    """The path under which ``target`` (seen from ``obj``'s scope) is rendered, or None.

    Relative names are resolved like Python names (the object, its class, its module); a dotted
    name's first part is resolved and the rest followed. Re-exports are followed to the object
    they name. Private, undocumented or external objects have no page: None.
    """
    head, _, rest = target.partition(".")
    if head == PACKAGE:
        path = target
    else:
        try:
            path = obj.resolve(head) + (f".{rest}" if rest else "")
        except Exception:  # griffe's NameResolutionError and lookups through aliases
            return None
    if not path.startswith(PACKAGE + ".") and path != PACKAGE:
        return None
    try:
        found = obj.package[path[len(PACKAGE) + 1:]] if path != PACKAGE else obj.package
        # An inherited member is rendered on the class that inherits it (inherited_members):
        # keep its path there; a re-export is rendered where it is defined.
        inherited = found.is_alias and found.inherited
        if found.is_alias:
            found = found.final_target
    except Exception:  # not in the package, or an alias to something outside it
        return None
    shown = path if inherited else found.path
    documented = found.is_module or found.has_docstring
    private = any(part.startswith("_") for part in shown.split("."))
    return shown if documented and not private else None


def sphinx_roles_to_autorefs(docstring: str, obj: Any) -> str:
    """Rewrite the Sphinx roles of ``docstring`` (of ``obj``) as autorefs cross-references.

    ``:func:`~imcascade_jax.analysis.flux``` becomes ``[`flux`][imcascade_jax.analysis.flux]``;
    a role whose target is not documented on the site becomes inline code.
    """

    def replace(match: re.Match) -> str:
        title, target = _split_role(match.group(1))
        path = _documented_path(obj, target)
        return f"[`{title}`][{path}]" if path else f"`{title}`"

    return SPHINX_ROLE.sub(replace, docstring)


def _objects(obj: Any) -> Any:
    """``obj`` and all its members, recursively (re-exports skipped: their targets are visited)."""
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _objects(member)


class SphinxRolesToAutorefs(griffe.Extension):
    """Griffe extension (see ``mkdocs.yml``): convert the docstrings' Sphinx roles when the package
    is loaded, before mkdocstrings renders them, so that the API pages show links, not markup."""

    def on_package(self, *, pkg: Any, **kwargs: Any) -> None:
        for obj in _objects(pkg):
            if obj.docstring is not None:
                obj.docstring.value = sphinx_roles_to_autorefs(obj.docstring.value, obj)
